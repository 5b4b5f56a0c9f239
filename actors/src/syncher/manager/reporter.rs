//! The reporter side of the SyncherManager: committing changes (schema check,
//! next version, history, store, publication), subscriptions, reads, invitations,
//! creation and deletion of reported objects.

use super::*;

impl SyncherManager {
    /// Commits a change of a reported object: schema check, next version, history,
    /// store, local handles, remote observers.
    pub(super) fn commit(
        &mut self,
        obj: &Address,
        source: Address,
        child: Option<String>,
        op: Op,
        ctx: &mut Context<Self>,
    ) -> Result<Change, SyncError> {
        let now = self.now();
        let max = self.config.max_data_bytes;
        let r = self
            .reported
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let version = r.view.with(|s| s.version) + 1;
        let change = Change {
            version,
            source,
            last_modified: now,
            child,
            op,
        };
        let next = r.view.with(|s| s.preview(&change))?;
        if let Some(schema) = &r.schema {
            schema.check(&next.data)?;
        }
        if data_len(&next.data) > max {
            return Err(SyncError::BadRequest(format!(
                "object data larger than {max} bytes"
            )));
        }
        r.view.write(|s| {
            *s = next;
            s.last_modified = now;
        });
        r.history.push(change.clone());
        let remote = r.observers.iter().any(|l| l.manager != self.me);
        self.stats.committed += 1;
        self.mark(Key::Reported(obj.clone()), ctx);
        self.notify(obj, &SyncEvent::Changed(change.clone()));
        if remote {
            self.publish(obj, &change);
        }
        Ok(change)
    }

    pub(super) fn publish(&self, obj: &Address, change: &Change) {
        let (kind, to) = match (&change.child, &change.op) {
            (Some(_), Op::CreateChild { .. }) => {
                (MessageType::Create, channel(obj, Channel::Children))
            }
            (Some(_), _) => (MessageType::Update, channel(obj, Channel::Children)),
            (None, _) => (MessageType::Update, channel(obj, Channel::Changes)),
        };
        let children = change.child.is_some();
        let mut m = Message::new(kind, obj.clone(), to).with_body(body_of(change.to_body(obj)));
        m.id = self.bus.next_id();
        match children {
            // the reporter listens on `<obj>/children/` itself
            true => self.bus.send_to_stub(m),
            false => self.bus.send(m),
        };
    }

    /// May `source` (via the manager `via`) write children of `r`?
    pub(super) fn participant(r: &Reported, source: &Address, via: &Address) -> bool {
        r.view.with(|s| &s.reporter == source)
            || r.observers
                .iter()
                .any(|l| &l.hyperty == source && &l.manager == via)
    }

    /// A write to a reported object by `source` through the manager `via`; a new
    /// child takes `child_id` when the sender named it (runtime-core's children),
    /// else the next one of the object.
    pub(super) fn write(
        &mut self,
        req: &Message,
        source: Address,
        via: &Address,
        child_id: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Result<Reply, SyncError> {
        let res = resource(req)
            .ok_or_else(|| SyncError::BadRequest("missing field 'body.resource'".into()))?;
        let (obj, target) = target(res)?;
        let r = self
            .reported
            .get(&obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let reporter = r.view.with(|s| s.reporter.clone());
        if let Some(v) = req.body.extra.get("version").filter(|v| !v.is_null()) {
            let at = r.view.with(|s| s.version);
            let got = v
                .as_u64()
                .ok_or_else(|| SyncError::BadRequest("body.version must be a number".into()))?;
            if got != at {
                return Err(SyncError::StaleVersion { got, at });
            }
        }
        let map = body_map(&req.body);
        match (req.kind.clone(), target) {
            (MessageType::Update, Target::Data) => {
                if source != reporter {
                    return Err(SyncError::Forbidden(format!(
                        "only the reporter {reporter} updates {obj}"
                    )));
                }
                let op = Op::parse(&MessageType::Update, &map)?;
                let c = self.commit(&obj, source, None, op, ctx)?;
                Ok(Reply::version(c.version))
            }
            (MessageType::Create, Target::NewChild) => {
                if !Self::participant(r, &source, via) {
                    return Err(SyncError::Forbidden(format!(
                        "{source} neither reports nor observes {obj}"
                    )));
                }
                let value = child_data(req.body.value.clone().unwrap_or(Value::Null));
                let id = if let Some(id) = child_id {
                    if id.is_empty() || id.len() > MAX_CHILD_ID {
                        return Err(SyncError::BadRequest(format!(
                            "a child id has 1 to {MAX_CHILD_ID} characters"
                        )));
                    }
                    if r.view.with(|s| s.children.contains_key(&id)) {
                        return Err(SyncError::BadRequest(format!("child {id} of {obj} exists")));
                    }
                    id
                } else {
                    let r = self
                        .reported
                        .get_mut(&obj)
                        .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
                    r.next_child += 1;
                    let tag: String = source
                        .path()
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(8)
                        .collect();
                    format!("{tag}#{}", r.next_child)
                };
                let c = self.commit(
                    &obj,
                    source,
                    Some(id.clone()),
                    Op::CreateChild { value },
                    ctx,
                )?;
                Ok(Reply {
                    resource: Some(id),
                    value: Some(json!({ "version": c.version })),
                    extra: Vec::new(),
                })
            }
            (MessageType::Update, Target::Child(id)) => {
                let creator = r
                    .view
                    .with(|s| s.children.get(&id).map(|c| c.reporter.clone()))
                    .ok_or_else(|| SyncError::NotFound(format!("child {id} of {obj}")))?;
                if source != creator && source != reporter {
                    return Err(SyncError::Forbidden(format!(
                        "only {creator} or the reporter updates child {id}"
                    )));
                }
                if !Self::participant(r, &source, via) {
                    return Err(SyncError::Forbidden(format!(
                        "{source} no longer observes {obj}"
                    )));
                }
                let op = Op::parse(&MessageType::Update, &map)?;
                if matches!(op, Op::CreateChild { .. }) {
                    return Err(SyncError::BadRequest("not a child update".into()));
                }
                let c = self.commit(&obj, source, Some(id), op, ctx)?;
                Ok(Reply::version(c.version))
            }
            (MessageType::Event, Target::NewChild) => {
                if !Self::participant(r, &source, via) {
                    return Err(SyncError::Forbidden(format!(
                        "{source} neither reports nor observes {obj}"
                    )));
                }
                let value = req.body.value.clone().unwrap_or(Value::Null);
                let remote = r.observers.iter().any(|l| l.manager != self.me);
                self.notify(
                    &obj,
                    &SyncEvent::Event {
                        source: source.clone(),
                        value: value.clone(),
                    },
                );
                if remote {
                    let mut m = Message::new(
                        MessageType::Event,
                        obj.clone(),
                        channel(&obj, Channel::Children),
                    )
                    .with_value(value);
                    m.body.source = Some(source);
                    m.id = self.bus.next_id();
                    self.bus.send_to_stub(m);
                }
                Ok(Reply::default())
            }
            (kind, _) => Err(SyncError::BadRequest(format!(
                "{kind} of {res} is not a sync write"
            ))),
        }
    }

    pub(super) fn decide(&self, r: &Reported, req: &SubscriptionRequest) -> SubscriptionDecision {
        match &r.policy {
            Some(p) => p(req),
            None => SubscriptionDecision::Accept,
        }
    }

    /// An observer asks to subscribe to a reported object (locally, or from a
    /// remote manager on `<obj>/subscription`): the reporter's decision, then
    /// the snapshot.
    pub(super) fn accept(
        &mut self,
        obj: &Address,
        observer: Address,
        manager: Address,
        identity: Option<Value>,
    ) -> Result<Reply, SyncError> {
        let max = self.config.max_observers;
        let r = self
            .reported
            .get(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let req = SubscriptionRequest {
            object: obj.clone(),
            observer: observer.clone(),
            manager: manager.clone(),
            identity,
            invited: r.authorise.contains(&observer),
        };
        if let SubscriptionDecision::Reject(why) = self.decide(r, &req) {
            info!(object = %obj, %observer, reason = %why, "subscription rejected");
            return Err(SyncError::Forbidden(why));
        }
        let link = Link {
            hyperty: observer.clone(),
            manager,
        };
        let r = self
            .reported
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if !r.observers.contains(&link) {
            if r.observers.len() >= max {
                return Err(SyncError::Full("observers of the object"));
            }
            r.observers.push(link);
        }
        let snapshot = r.view.snapshot();
        let schema = snapshot.schema.clone();
        self.dirty.insert(Key::Reported(obj.clone()));
        self.notify(obj, &SyncEvent::Subscribed { observer });
        Ok(Reply {
            resource: Some(obj.to_string()),
            value: Some(snapshot.to_value()),
            extra: schema
                .map(|s| vec![("schema", json!(s))])
                .unwrap_or_default(),
        })
    }

    pub(super) fn leave(
        &mut self,
        obj: &Address,
        observer: &Address,
        manager: &Address,
    ) -> Result<Reply, SyncError> {
        let r = self
            .reported
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let before = r.observers.len();
        r.observers
            .retain(|l| !(&l.hyperty == observer && &l.manager == manager));
        if r.observers.len() == before {
            return Err(SyncError::NotFound(format!(
                "{observer} as observer of {obj}"
            )));
        }
        self.dirty.insert(Key::Reported(obj.clone()));
        self.notify(
            obj,
            &SyncEvent::Unsubscribed {
                observer: observer.clone(),
            },
        );
        Ok(Reply::default())
    }

    /// `read` of a reported object by the manager `via`: the deltas after
    /// `body.version` if the history still has them, else the snapshot.
    pub(super) fn read_reported(
        &self,
        req: &Message,
        obj: &Address,
        via: &Address,
    ) -> Result<Reply, SyncError> {
        let r = self
            .reported
            .get(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if via != &self.me && !r.observers.iter().any(|l| &l.manager == via) {
            return Err(SyncError::Forbidden(format!(
                "{via} has no accepted observer of {obj}"
            )));
        }
        let current = r.view.with(|s| s.version);
        if let Some(v) = req.body.extra.get("version").and_then(Value::as_u64) {
            if let Some(changes) = r.history.since(v, current) {
                return Ok(Reply::value(json!({
                    "version": current,
                    "changes": changes.iter().map(|c| c.to_entry(obj)).collect::<Vec<_>>(),
                })));
            }
        }
        Ok(Reply::value(r.view.snapshot().to_value()))
    }

    pub(super) fn invite(
        &mut self,
        obj: &Address,
        invitees: Vec<Address>,
        ctx: &mut Context<Self>,
    ) -> Result<(), SyncError> {
        let max = self.config.max_observers;
        let r = self
            .reported
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if r.authorise.len() + invitees.len() > max {
            return Err(SyncError::Full("invitees of the object"));
        }
        let (meta, reporter) = r.view.with(|s| {
            (
                json!({"url": s.url, "name": s.name, "scheme": s.scheme, "reporter": s.reporter, "schema": s.schema}),
                s.reporter.clone(),
            )
        });
        for i in &invitees {
            if !r.authorise.contains(i) {
                r.authorise.push(i.clone());
            }
        }
        self.dirty.insert(Key::Reported(obj.clone()));
        let from = channel(obj, Channel::Subscription);
        for invitee in invitees {
            let mut m = Message::new(MessageType::Create, from.clone(), invitee.clone())
                .with_value(meta.clone());
            m.body.source = Some(reporter.clone());
            if let Some(s) = meta.get("schema").filter(|s| !s.is_null()) {
                m.body.extra.insert("schema".into(), s.clone());
            }
            let post = self.bus.post(m);
            let obj = obj.clone();
            ctx.spawn(post.into_actor(self).map(move |r, act, _| {
                let code = match r {
                    Ok(resp) => resp.code().map_or(500, ResponseCode::as_u16),
                    Err(e) => e.response_code().as_u16(),
                };
                debug!(object = %obj, %invitee, code, "invitation answered");
                act.notify(&obj, &SyncEvent::InvitationAnswered { invitee, code });
            }));
        }
        Ok(())
    }

    pub(super) fn create(&mut self, req: Message, ctx: &mut Context<Self>) {
        let prepared = self.prepare_create(&req);
        let (reporter, scheme, state, schema, resources, authorise) = match prepared {
            Ok(p) => p,
            Err(e) => return self.respond(&req, None, Err(e)),
        };
        let Some(alloc) = self.allocator.as_ref().map(|a| {
            a.send(AllocateObjects {
                hyperty: reporter.clone(),
                scheme: scheme.clone(),
                number: 1,
            })
        }) else {
            return self.respond(
                &req,
                None,
                Err(SyncError::Unavailable("object allocation".into())),
            );
        };
        let _span = tracing::debug_span!("sm.create", reporter = %reporter, %scheme).entered();
        ctx.spawn(alloc.into_actor(self).map(move |r, act, ctx| {
            let url = match r {
                Ok(Ok(list)) => list.into_iter().next(),
                Ok(Err(e)) => {
                    return act.respond(
                        &req,
                        None,
                        Err(SyncError::Unavailable(format!("object allocation: {e}"))),
                    )
                }
                Err(_) => None,
            };
            let Some(url) = url else {
                return act.respond(
                    &req,
                    None,
                    Err(SyncError::Unavailable("object allocation".into())),
                );
            };
            if act.objects() >= act.config.max_objects {
                return act.respond(&req, None, Err(SyncError::Full("sync objects")));
            }
            let mut state = state;
            state.url = url.clone();
            info!(object = %url, reporter = %reporter, "data object created");
            act.reported.insert(
                url.clone(),
                Reported {
                    view: ObjectView::new(state),
                    schema,
                    history: History::new(act.config.history),
                    observers: Vec::new(),
                    authorise: Vec::new(),
                    resources,
                    policy: None,
                    next_child: 0,
                },
            );
            act.listen(Self::reported_channels(&url), ctx);
            // the creator hears of the object once the node routes its channels
            // here: an observer it tells at once finds it
            let subscribed = act
                .node_subscription_request(
                    MessageType::Subscribe,
                    Self::reported_channels(&url),
                    reporter.address(),
                )
                .map(|m| act.bus.post(m));
            act.publish_audience(&url, ctx);
            act.register_object(&url, ctx);
            act.mark(Key::Reported(url.clone()), ctx);
            let Some(subscribed) = subscribed else {
                return act.created(req, url, authorise, ctx);
            };
            ctx.spawn(subscribed.into_actor(act).map(move |r, act, ctx| {
                match r {
                    Ok(r) if r.code().is_some_and(ResponseCode::is_success) => {}
                    Ok(r) => {
                        warn!(object = %url, response = %r.to_json(), "node subscription refused")
                    }
                    Err(e) => debug!(object = %url, error = %e, "no node subscription"),
                }
                act.created(req, url, authorise, ctx);
            }));
        }));
    }

    /// A created object is routed here: its invitees are invited and its creator
    /// answered.
    fn created(
        &mut self,
        req: Message,
        url: Address,
        authorise: Vec<Address>,
        ctx: &mut Context<Self>,
    ) {
        let invited = match authorise.is_empty() {
            true => Ok(()),
            false => self.invite(&url, authorise, ctx),
        };
        let reply = invited.map(|()| Reply {
            resource: Some(url.to_string()),
            value: Some(json!({"version": 0})),
            extra: vec![(
                "childrenResources",
                json!([channel(&url, Channel::Children)]),
            )],
        });
        self.respond(&req, None, reply);
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn prepare_create(
        &self,
        req: &Message,
    ) -> Result<
        (
            HypertyUrl,
            String,
            ObjectState,
            Option<Schema>,
            Vec<String>,
            Vec<Address>,
        ),
        SyncError,
    > {
        let reporter = HypertyUrl::from_address(req.from.clone())
            .map_err(|_| SyncError::Forbidden("only a hyperty reports data objects".into()))?;
        let value = req.body.value.clone().unwrap_or_else(|| json!({}));
        if !value.is_object() {
            return Err(SyncError::BadRequest("body.value must be an object".into()));
        }
        if let Some(r) = value.get("reporter").and_then(Value::as_str) {
            if r != reporter.as_str() {
                return Err(SyncError::Forbidden(format!(
                    "{} cannot create objects reported by {r}",
                    reporter
                )));
            }
        }
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let data = value.get("data").cloned().unwrap_or_else(|| json!({}));
        let resources = match value.get("resources") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => Vec::<String>::deserialize(v).map_err(|_| {
                SyncError::BadRequest("value.resources must be a list of strings".into())
            })?,
        };
        let (schema_name, schema) = self.schemas.resolve(req.body.extra.get("schema"))?;
        let scheme = schema
            .as_ref()
            .and_then(|s| s.scheme().map(str::to_owned))
            .or_else(|| {
                req.body
                    .extra
                    .get("scheme")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "resource".to_owned());
        let domain = self.me.domain().unwrap_or("localhost");
        DataObjectUrl::generate(&scheme, domain)
            .map_err(|e| SyncError::BadRequest(format!("scheme {scheme:?}: {e}")))?;
        if let Some(s) = &schema {
            s.check(&data)?;
        }
        if data_len(&data) > self.config.max_data_bytes {
            return Err(SyncError::BadRequest(format!(
                "object data larger than {} bytes",
                self.config.max_data_bytes
            )));
        }
        if self.objects() >= self.config.max_objects {
            return Err(SyncError::Full("sync objects"));
        }
        let authorise = match req.body.extra.get("authorise") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => Vec::<Address>::deserialize(v).map_err(|_| {
                SyncError::BadRequest("body.authorise must be a list of hyperty URLs".into())
            })?,
        };
        let mut state = ObjectState::new(
            self.me.clone(),
            &scheme,
            &name,
            reporter.address().clone(),
            data,
            self.now(),
        );
        state.schema = schema_name;
        Ok((reporter, scheme, state, schema, resources, authorise))
    }

    pub(super) fn delete_reported(
        &mut self,
        obj: &Address,
        by: &Address,
        ctx: &mut Context<Self>,
    ) -> Result<Reply, SyncError> {
        let r = self
            .reported
            .get(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let reporter = r.view.with(|s| s.reporter.clone());
        if &reporter != by {
            return Err(SyncError::Forbidden(format!(
                "only the reporter {reporter} deletes {obj}"
            )));
        }
        let Some(r) = self.reported.remove(obj) else {
            return Err(SyncError::NotFound(obj.to_string()));
        };
        info!(object = %obj, "data object deleted");
        self.notify(obj, &SyncEvent::Deleted);
        self.sinks.remove(obj);
        if r.observers.iter().any(|l| l.manager != self.me) {
            let mut m = Message::new(
                MessageType::Delete,
                channel(obj, Channel::Subscription),
                channel(obj, Channel::Changes),
            );
            m.body.resource = Some(OneOrMany::One(obj.to_string()));
            m.id = self.bus.next_id();
            self.bus.send(m);
        }
        self.node_subscription(
            MessageType::Unsubscribe,
            Self::reported_channels(obj),
            &reporter,
            ctx,
        );
        self.registry_request(MessageType::Delete, json!({"resource": obj.as_str()}), ctx);
        // The address stays ours for a while: a request already on its way (an
        // observer reading the object it was just told is gone) is answered 404
        // from it, instead of meeting an address the node no longer lets us answer
        // from.
        let gone = obj.clone();
        ctx.run_later(self.config.fetch_timeout, move |act, ctx| {
            act.unlisten(&Self::reported_channels(&gone));
            if let Some(to) = act.node_allocation.clone() {
                let mut m = Message::new(MessageType::Delete, act.me.clone(), to);
                m.body.children_resources = Some(NestedList::from_items([gone.as_str()]));
                act.post_logged(m, "address release", ctx);
            }
        });
        self.mark(Key::Reported(obj.clone()), ctx);
        Ok(Reply::default())
    }
}
