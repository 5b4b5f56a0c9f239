//! Requests of the runtime's own hyperties to `<rt>/sm`, and messages arriving on
//! a reported object's addresses.

use super::*;

impl SyncherManager {
    pub(super) fn local(&mut self, req: Message, ctx: &mut Context<Self>) {
        let _span =
            tracing::debug_span!("sm.request", id = req.id, kind = %req.kind, from = %req.from)
                .entered();
        let resume = req.body.extra.get("resume").and_then(Value::as_bool) == Some(true);
        let res = resource(&req).map(str::to_owned);
        let r = match (&req.kind, res) {
            (MessageType::Create, _) if resume => self.resume_reporters(&req, ctx),
            (MessageType::Subscribe, _) if resume => self.resume_observers(&req, ctx),
            (MessageType::Create, None) => return self.create(req, ctx),
            (MessageType::Create, Some(r)) if req.body.extra.contains_key("authorise") => {
                self.invite_request(&req, &r, ctx)
            }
            (MessageType::Subscribe, Some(r)) => match parse_address(&r, "body.resource") {
                Ok(obj) => return self.subscribe(req, obj, ctx),
                Err(e) => Err(e),
            },
            (MessageType::Unsubscribe, Some(r)) => {
                parse_address(&r, "body.resource").and_then(|obj| self.unsubscribe(&req, &obj, ctx))
            }
            (MessageType::Delete, Some(r)) => parse_address(&r, "body.resource")
                .and_then(|obj| self.delete_reported(&obj, &req.from, ctx)),
            (MessageType::Read, Some(r)) => return self.read_local(req, &r, ctx),
            (MessageType::Execute, _) => return self.execute(req, ctx),
            (MessageType::Create | MessageType::Update | MessageType::Event, Some(r)) => {
                return self.write_local(req, &r, ctx)
            }
            (kind, None) => Err(SyncError::BadRequest(format!(
                "{kind} to the SyncherManager needs body.resource"
            ))),
            (kind, Some(_)) => Err(SyncError::BadRequest(format!(
                "the SyncherManager does not take {kind}"
            ))),
        };
        self.respond(&req, None, r);
    }

    pub(super) fn invite_request(
        &mut self,
        req: &Message,
        res: &str,
        ctx: &mut Context<Self>,
    ) -> Result<Reply, SyncError> {
        let obj = parse_address(res, "body.resource")?;
        let r = self
            .reported
            .get(&obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if r.view.with(|s| s.reporter != req.from) {
            return Err(SyncError::Forbidden(format!(
                "only the reporter invites to {obj}"
            )));
        }
        let invitees = req
            .body
            .extra
            .get("authorise")
            .map(Vec::<Address>::deserialize)
            .transpose()
            .map_err(|_| {
                SyncError::BadRequest("body.authorise must be a list of hyperty URLs".into())
            })?
            .unwrap_or_default();
        self.invite(&obj, invitees, ctx)?;
        self.mark(Key::Reported(obj), ctx);
        Ok(Reply::default())
    }

    pub(super) fn write_local(&mut self, req: Message, res: &str, ctx: &mut Context<Self>) {
        let (obj, _) = match target(res) {
            Ok(t) => t,
            Err(e) => return self.respond(&req, None, Err(e)),
        };
        if self.reported.contains_key(&obj) {
            let me = self.me.clone();
            let r = self.write(&req, req.from.clone(), &me, None, ctx);
            return self.respond(&req, None, r);
        }
        let Some(o) = self.observed.get(&obj) else {
            return self.respond(&req, None, Err(SyncError::NotFound(obj.to_string())));
        };
        if !o.observers.contains(&req.from) {
            return self.respond(
                &req,
                None,
                Err(SyncError::Forbidden(format!(
                    "{} does not observe {obj}",
                    req.from
                ))),
            );
        }
        if req.kind == MessageType::Update && !res.contains("/children/") {
            return self.respond(
                &req,
                None,
                Err(SyncError::Forbidden(format!(
                    "only the reporter updates {obj}; observers write children"
                ))),
            );
        }
        // a child request of an observer goes to the reporter, which sequences it
        let mut fwd = Message::new(req.kind.clone(), self.me.clone(), obj.clone());
        fwd.body = req.body.clone();
        fwd.body.source = Some(req.from.clone());
        let post = self.bus.post(fwd);
        ctx.spawn(post.into_actor(self).map(move |r, act, _| {
            let r = r
                .map_err(|e| SyncError::from_response(e.response_code(), Some(&e.to_string())))
                .and_then(success)
                .map(|resp| Reply {
                    resource: resource(&resp).map(str::to_owned),
                    value: resp.body.value,
                    extra: Vec::new(),
                });
            act.respond(&req, None, r);
        }));
    }

    pub(super) fn read_local(&mut self, req: Message, res: &str, ctx: &mut Context<Self>) {
        let obj = match parse_address(res, "body.resource") {
            Ok(o) => o,
            Err(e) => return self.respond(&req, None, Err(e)),
        };
        if let Some(r) = self.reported.get(&obj) {
            let reporter = r.view.with(|s| s.reporter.clone());
            let allowed = reporter == req.from
                || r.observers
                    .iter()
                    .any(|l| l.hyperty == req.from && l.manager == self.me);
            let reply = match (
                allowed,
                req.body.extra.get("attribute").and_then(Value::as_str),
            ) {
                (false, _) => Err(SyncError::Forbidden(format!(
                    "{} neither reports nor observes {obj}",
                    req.from
                ))),
                (true, Some("observers")) => Ok(Reply::value(json!({
                    "observers": r.observers.iter().map(|l| &l.hyperty).collect::<Vec<_>>(),
                }))),
                (true, _) => Ok(Reply::value(r.view.snapshot().to_value())),
            };
            return self.respond(&req, None, reply);
        }
        if let Some(o) = self.observed.get(&obj).filter(|o| o.ready) {
            let reply = match o.observers.contains(&req.from) {
                true => Ok(Reply::value(o.view.snapshot().to_value())),
                false => Err(SyncError::Forbidden(format!(
                    "{} does not observe {obj}",
                    req.from
                ))),
            };
            return self.respond(&req, None, reply);
        }
        let post = self
            .bus
            .post(Message::new(MessageType::Read, self.me.clone(), obj));
        ctx.spawn(post.into_actor(self).map(move |r, act, _| {
            let r = r
                .map_err(|e| SyncError::from_response(e.response_code(), Some(&e.to_string())))
                .and_then(success)
                .map(|resp| Reply::value(resp.body.value.unwrap_or(Value::Null)));
            act.respond(&req, None, r);
        }));
    }

    pub(super) fn execute(&mut self, req: Message, ctx: &mut Context<Self>) {
        let method = req
            .body
            .extra
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let obj = req
            .body
            .extra
            .get("params")
            .and_then(|p| p.get("resource"))
            .and_then(Value::as_str)
            .map(|r| parse_address(r, "body.params.resource"));
        let (method, obj) = match (method, obj) {
            (Some(m), Some(Ok(o))) => (m, o),
            (_, Some(Err(e))) => return self.respond(&req, None, Err(e)),
            _ => {
                return self.respond(
                    &req,
                    None,
                    Err(SyncError::BadRequest(
                        "execute needs body.method and body.params.resource".into(),
                    )),
                )
            }
        };
        let Some(o) = self
            .observed
            .get_mut(&obj)
            .filter(|o| o.observers.contains(&req.from))
        else {
            return self.respond(
                &req,
                None,
                Err(SyncError::NotFound(format!(
                    "{obj} observed by {}",
                    req.from
                ))),
            );
        };
        match method.as_str() {
            "sync" => {
                o.paused = false;
                o.waiters.push(req);
                let fetching = o.fetching;
                if !fetching {
                    self.fetch(&obj, ctx);
                }
            }
            "stopSync" => {
                o.paused = true;
                self.respond(&req, None, Ok(Reply::default()));
            }
            other => {
                let e = SyncError::BadRequest(format!("unknown method {other:?} (sync, stopSync)"));
                self.respond(&req, None, Err(e));
            }
        }
    }

    pub(super) fn resume_reporters(
        &mut self,
        req: &Message,
        ctx: &mut Context<Self>,
    ) -> Result<Reply, SyncError> {
        let mine: Vec<Address> = self
            .reported
            .iter()
            .filter(|(_, r)| r.view.with(|s| s.reporter == req.from))
            .map(|(u, _)| u.clone())
            .collect();
        if mine.is_empty() {
            return Err(SyncError::NotFound(format!(
                "objects reported by {}",
                req.from
            )));
        }
        let mut snaps = Vec::new();
        for obj in &mine {
            self.subscribe_reported_at_node(obj, &req.from, ctx);
            self.register_object(obj, ctx);
            if let Some(r) = self.reported.get(obj) {
                snaps.push(r.view.snapshot().to_value());
            }
        }
        info!(reporter = %req.from, objects = mine.len(), "reporters resumed");
        Ok(Reply::value(Value::Array(snaps)))
    }

    pub(super) fn resume_observers(
        &mut self,
        req: &Message,
        ctx: &mut Context<Self>,
    ) -> Result<Reply, SyncError> {
        let mine: Vec<Address> = self
            .observed
            .iter()
            .filter(|(_, o)| o.observers.contains(&req.from))
            .map(|(u, _)| u.clone())
            .collect();
        if mine.is_empty() {
            return Err(SyncError::NotFound(format!(
                "objects observed by {}",
                req.from
            )));
        }
        let mut snaps = Vec::new();
        for obj in &mine {
            self.node_subscription(
                MessageType::Subscribe,
                Self::observed_channels(obj),
                &req.from,
                ctx,
            );
            self.fetch(obj, ctx);
            if let Some(o) = self.observed.get(obj) {
                snaps.push(o.view.snapshot().to_value());
            }
        }
        info!(observer = %req.from, objects = mine.len(), "observers resumed");
        Ok(Reply::value(Value::Array(snaps)))
    }

    pub(super) fn on_reported(
        &mut self,
        obj: &Address,
        at: Option<Channel>,
        msg: Message,
        ctx: &mut Context<Self>,
    ) {
        let via = msg.from.clone();
        let r = match (at, &msg.kind) {
            (Some(Channel::Subscription), MessageType::Subscribe) => {
                let observer = msg
                    .body
                    .extra
                    .get("subscriber")
                    .and_then(Value::as_str)
                    .map(|s| parse_address(s, "body.subscriber"))
                    .or_else(|| msg.body.source.clone().map(Ok));
                match observer {
                    Some(Ok(o)) => {
                        let r = self.accept(obj, o, via, msg.body.identity.clone());
                        if r.is_ok() {
                            // admitted at the node before the observer hears of it
                            self.publish_audience(obj, ctx);
                            self.mark(Key::Reported(obj.clone()), ctx);
                        }
                        r
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(SyncError::BadRequest(
                        "missing field 'body.subscriber'".into(),
                    )),
                }
            }
            (Some(Channel::Subscription), MessageType::Unsubscribe) => {
                match msg.body.source.clone() {
                    Some(o) => {
                        let r = self.leave(obj, &o, &via);
                        if r.is_ok() {
                            self.publish_audience(obj, ctx);
                            self.mark(Key::Reported(obj.clone()), ctx);
                        }
                        r
                    }
                    None => Err(SyncError::BadRequest("missing field 'body.source'".into())),
                }
            }
            (None, MessageType::Read) => self.read_reported(&msg, obj, &via),
            (None, MessageType::Create | MessageType::Update | MessageType::Event) => {
                match msg.body.source.clone() {
                    Some(source) => self.write(&msg, source, &via, None, ctx),
                    None => Err(SyncError::BadRequest("missing field 'body.source'".into())),
                }
            }
            (Some(Channel::Children), _) => return self.on_children(obj, msg, ctx),
            (Some(_), _) => return, // echoes of our own publications, stray answers
            (None, kind) => Err(SyncError::BadRequest(format!(
                "{kind} is not a request on {obj}"
            ))),
        };
        self.respond(&msg, None, r);
    }

    /// A child request straight on `<obj>/children/`, as runtime-core's observers
    /// and reporters send them (§9 Children): the sender must be the reporter or
    /// an accepted observer (else 403, nothing applied); a new child keeps the id
    /// the sender gave it (`body.resource`); the change is sequenced, stored and
    /// published like any other. A create is answered 100, as every receiver
    /// answers it, then 200 with the child's id and version; updates and events
    /// are answered only when refused (§9: updates get no reply).
    pub(super) fn on_children(&mut self, obj: &Address, msg: Message, ctx: &mut Context<Self>) {
        if msg.from == *obj || msg.kind == MessageType::Response {
            return; // our own publications, echoed by the node
        }
        let source = msg.from.clone();
        let via =
            self.reported
                .get(obj)
                .and_then(|r| match r.view.with(|s| s.reporter == source) {
                    true => Some(self.me.clone()),
                    false => r
                        .observers
                        .iter()
                        .find(|l| l.hyperty == source)
                        .map(|l| l.manager.clone()),
                });
        let Some(via) = via else {
            let e = SyncError::Forbidden(format!("{source} neither reports nor observes {obj}"));
            return self.respond(&msg, None, Err(e));
        };
        let children = channel(obj, Channel::Children);
        let (res, child_id) = match (&msg.kind, resource(&msg)) {
            (MessageType::Create, id) => (children.to_string(), id.map(str::to_owned)),
            (MessageType::Update, Some(id)) => (format!("{children}{id}"), None),
            (MessageType::Event, _) => (children.to_string(), None),
            (MessageType::Update, None) => {
                let e = SyncError::BadRequest(
                    "a child update needs body.resource: the child id".into(),
                );
                return self.respond(&msg, None, Err(e));
            }
            (kind, _) => {
                let e = SyncError::BadRequest(format!("{kind} is not a child request"));
                return self.respond(&msg, None, Err(e));
            }
        };
        let mut req = msg.clone();
        req.body.resource = Some(OneOrMany::One(res));
        // a runtime-core child counts versions of its own; the reporter sequences
        req.body.extra.remove("version");
        let _span =
            tracing::debug_span!("sm.child", object = %obj, kind = %msg.kind, %source).entered();
        if msg.kind == MessageType::Create {
            self.bus
                .send(msg.reply_from(children, ResponseCode::Provisional));
        }
        let r = self.write(&req, source, &via, child_id, ctx);
        match (&msg.kind, r) {
            (MessageType::Create, r) => self.respond(&msg, None, r),
            (_, Ok(_)) => {}
            (_, Err(e)) => self.respond(&msg, None, Err(e)),
        }
    }
}
