//! The observer side of the SyncherManager: subscribing, applying published
//! changes strictly in version order, the reorder buffer, gap fetches and idle
//! checks.

use super::*;

impl SyncherManager {
    pub(super) fn subscribe(&mut self, req: Message, obj: Address, ctx: &mut Context<Self>) {
        let observer = req.from.clone();
        if self.reported.contains_key(&obj) {
            let me = self.me.clone();
            let r = self.accept(&obj, observer, me, req.body.identity.clone());
            if r.is_ok() {
                self.mark(Key::Reported(obj.clone()), ctx);
            }
            return self.respond(&req, None, r);
        }
        if let Some(o) = self.observed.get(&obj) {
            if o.ready && o.observers.contains(&observer) {
                let snap = o.view.snapshot().to_value();
                return self.respond(&req, None, Ok(Reply::value(snap)));
            }
        }
        let first = !self.observed.contains_key(&obj);
        if first {
            if self.objects() >= self.config.max_objects {
                return self.respond(&req, None, Err(SyncError::Full("sync objects")));
            }
            let placeholder =
                ObjectState::new(obj.clone(), obj.scheme(), "", obj.clone(), Value::Null, 0);
            self.observed
                .insert(obj.clone(), Observed::new(ObjectView::new(placeholder)));
            self.listen(Self::observed_channels(&obj), ctx);
            self.node_subscription(
                MessageType::Subscribe,
                Self::observed_channels(&obj),
                &observer,
                ctx,
            );
        }
        // §9 Subscribe step 3: the observer hears 100 while the reporter decides
        let mut progress = req.reply_from(self.me.clone(), ResponseCode::Provisional);
        progress.body.resource = Some(OneOrMany::One(obj.to_string()));
        progress.body.children_resources =
            Some(NestedList::from_items([
                channel(&obj, Channel::Children).as_str()
            ]));
        self.bus.send(progress);
        let mut ask = Message::new(
            MessageType::Subscribe,
            self.me.clone(),
            channel(&obj, Channel::Subscription),
        );
        ask.body
            .extra
            .insert("subscriber".into(), json!(observer.as_str()));
        ask.body.identity = req.body.identity.clone();
        let post = self.bus.post(ask);
        let _span = tracing::debug_span!("sm.subscribe", object = %obj, %observer).entered();
        ctx.spawn(post.into_actor(self).map(move |r, act, ctx| {
            let r = r
                .map_err(|e| SyncError::from_response(e.response_code(), Some(&e.to_string())))
                .and_then(success)
                .and_then(|resp| {
                    ObjectState::from_value(resp.body.value.as_ref().unwrap_or(&Value::Null))
                });
            act.subscribed(req, obj, r, ctx);
        }));
    }

    pub(super) fn subscribed(
        &mut self,
        req: Message,
        obj: Address,
        r: Result<ObjectState, SyncError>,
        ctx: &mut Context<Self>,
    ) {
        let observer = req.from.clone();
        let Some(o) = self.observed.get_mut(&obj) else {
            return self.respond(&req, None, Err(SyncError::NotFound(obj.to_string())));
        };
        match r {
            Ok(snap) if snap.url == obj => {
                let current = o.view.with(|s| s.version);
                let replaced = !o.ready || snap.version > current;
                if replaced {
                    let was_ready = o.ready;
                    o.view.write(|s| *s = snap);
                    o.ready = true;
                    if was_ready {
                        let v = o.view.with(|s| s.version);
                        self.notify(&obj, &SyncEvent::Resync { version: v });
                    }
                }
                if let Some(o) = self.observed.get_mut(&obj) {
                    if !o.observers.contains(&observer) {
                        o.observers.push(observer.clone());
                    }
                }
                info!(object = %obj, %observer, "subscribed");
                self.drain(&obj, ctx);
                self.mark(Key::Observed(obj.clone()), ctx);
                let snap = self
                    .observed
                    .get(&obj)
                    .map(|o| o.view.snapshot().to_value())
                    .unwrap_or(Value::Null);
                self.respond(
                    &req,
                    None,
                    Ok(Reply {
                        resource: Some(obj.to_string()),
                        value: Some(snap),
                        extra: Vec::new(),
                    }),
                );
            }
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(_) => SyncError::BadRequest("the reporter answered another object".into()),
                };
                if o.observers.is_empty() {
                    self.forget_observed(&obj, &observer, ctx);
                }
                self.respond(&req, None, Err(e));
            }
        }
    }

    /// Drops the replica of `obj`: listeners, node subscription, store.
    pub(super) fn forget_observed(
        &mut self,
        obj: &Address,
        source: &Address,
        ctx: &mut Context<Self>,
    ) {
        if self.observed.remove(obj).is_none() {
            return;
        }
        self.sinks.remove(obj);
        self.unlisten(&Self::observed_channels(obj));
        self.node_subscription(
            MessageType::Unsubscribe,
            Self::observed_channels(obj),
            source,
            ctx,
        );
        self.mark(Key::Observed(obj.clone()), ctx);
    }

    pub(super) fn unsubscribe(
        &mut self,
        req: &Message,
        obj: &Address,
        ctx: &mut Context<Self>,
    ) -> Result<Reply, SyncError> {
        let observer = req.from.clone();
        if self.reported.contains_key(obj) {
            let me = self.me.clone();
            let r = self.leave(obj, &observer, &me)?;
            self.drop_sinks_of(obj, &observer);
            self.mark(Key::Reported(obj.clone()), ctx);
            return Ok(r);
        }
        let o = self
            .observed
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if !o.observers.contains(&observer) {
            return Err(SyncError::NotFound(format!(
                "{observer} as observer of {obj}"
            )));
        }
        o.observers.retain(|a| a != &observer);
        let last = o.observers.is_empty();
        self.drop_sinks_of(obj, &observer);
        let mut m = Message::new(
            MessageType::Unsubscribe,
            self.me.clone(),
            channel(obj, Channel::Subscription),
        );
        m.body.source = Some(observer.clone());
        self.post_logged(m, "unsubscribe", ctx);
        if last {
            self.forget_observed(obj, &observer, ctx);
        } else {
            self.mark(Key::Observed(obj.clone()), ctx);
        }
        info!(object = %obj, %observer, "unsubscribed");
        Ok(Reply::default())
    }

    pub(super) fn drop_sinks_of(&mut self, obj: &Address, hyperty: &Address) {
        if let Some(list) = self.sinks.get_mut(obj) {
            list.retain(|(_, s)| &s.hyperty != hyperty);
        }
    }

    /// A change published by the reporter of an observed object.
    pub(super) fn receive(&mut self, obj: &Address, change: Change, ctx: &mut Context<Self>) {
        let limit = self.config.reorder_buffer;
        let Some(o) = self.observed.get_mut(obj) else {
            return;
        };
        o.heard = true;
        let current = o.view.with(|s| s.version);
        if !o.ready {
            if o.early.len() < limit {
                o.early.insert(change.version, change);
            }
            return;
        }
        if change.version <= current {
            self.stats.stale += 1;
            return;
        }
        if change.version > current + 1 {
            if o.early.len() < limit {
                o.early.insert(change.version, change);
            }
            debug!(object = %obj, at = current, "gap in the changes, fetching what was missed");
            return self.fetch(obj, ctx);
        }
        self.apply_observed(obj, change, ctx);
        self.drain(obj, ctx);
    }

    pub(super) fn apply_observed(
        &mut self,
        obj: &Address,
        change: Change,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some(o) = self.observed.get_mut(obj) else {
            return false;
        };
        match o.view.write(|s| s.apply(&change)) {
            Ok(()) => {
                self.stats.applied += 1;
                self.notify(obj, &SyncEvent::Changed(change));
                self.mark(Key::Observed(obj.clone()), ctx);
                true
            }
            Err(e) => {
                warn!(object = %obj, version = change.version, error = %e, "change does not apply, fetching a snapshot");
                o.early.clear();
                let v = o.view.with(|s| s.version);
                // ask for everything: the reporter answers with its snapshot
                o.view.write(|s| s.version = v);
                self.fetch_from(obj, None, ctx);
                false
            }
        }
    }

    /// Applies buffered changes that are next in line; fetches if a gap remains.
    pub(super) fn drain(&mut self, obj: &Address, ctx: &mut Context<Self>) {
        loop {
            let Some(o) = self.observed.get_mut(obj) else {
                return;
            };
            let current = o.view.with(|s| s.version);
            let Some((&v, _)) = o.early.first_key_value() else {
                return;
            };
            if v <= current {
                o.early.remove(&v);
                continue;
            }
            if v > current + 1 {
                return self.fetch(obj, ctx);
            }
            let Some(c) = o.early.remove(&v) else { return };
            if !self.apply_observed(obj, c, ctx) {
                return;
            }
        }
    }

    pub(super) fn fetch(&mut self, obj: &Address, ctx: &mut Context<Self>) {
        let v = self.observed.get(obj).map(|o| o.view.with(|s| s.version));
        self.fetch_from(obj, v, ctx);
    }

    /// Asks the reporter for what came after `version` (`None`: a snapshot).
    pub(super) fn fetch_from(
        &mut self,
        obj: &Address,
        version: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let timeout = self.config.fetch_timeout;
        let Some(o) = self.observed.get_mut(obj) else {
            return;
        };
        if o.fetching || !o.ready {
            return;
        }
        o.fetching = true;
        self.stats.fetches += 1;
        let mut m = Message::new(MessageType::Read, self.me.clone(), obj.clone());
        if let Some(v) = version {
            m.body.extra.insert("version".into(), json!(v));
        }
        let post = self.bus.post(m);
        let obj = obj.clone();
        ctx.spawn(
            async move { tokio::time::timeout(timeout, post).await }
                .into_actor(self)
                .map(move |r, act, ctx| {
                    let r = match r {
                        Ok(Ok(resp)) => Ok(resp),
                        Ok(Err(e)) => Err(SyncError::from_response(
                            e.response_code(),
                            Some(&e.to_string()),
                        )),
                        Err(_) => Err(SyncError::Unavailable(
                            "the reporter (fetch timed out)".into(),
                        )),
                    };
                    act.fetched(&obj, r, ctx);
                }),
        );
    }

    pub(super) fn fetched(
        &mut self,
        obj: &Address,
        r: Result<Message, SyncError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(o) = self.observed.get_mut(obj) else {
            return;
        };
        o.fetching = false;
        let resp = match r {
            Ok(resp) => resp,
            Err(e) => {
                debug!(object = %obj, error = %e, "fetch failed, trying again");
                let retry = self.config.fetch_timeout.min(self.config.check_interval);
                let obj = obj.clone();
                ctx.run_later(retry, move |act, ctx| {
                    let pending = act
                        .observed
                        .get(&obj)
                        .is_some_and(|o| !o.early.is_empty() || !o.waiters.is_empty());
                    if pending {
                        act.fetch(&obj, ctx);
                    }
                });
                return;
            }
        };
        match resp.code().map(ResponseCode::as_u16) {
            Some(200) => o.unheld_since = None,
            Some(404) => {
                // nobody holds it: deleted, or its reporter's runtime is away
                let now = self.clock.now_ms();
                let since = *o.unheld_since.get_or_insert(now);
                let gone_after =
                    u64::try_from(self.config.gone_after.as_millis()).unwrap_or(u64::MAX);
                if now.saturating_sub(since) >= gone_after {
                    info!(object = %obj, "observed object is gone");
                    return self.observed_deleted(obj, ctx);
                }
                debug!(object = %obj, "nobody holds the observed object; the replica is kept");
                let waiters = std::mem::take(&mut o.waiters);
                let e = SyncError::Unavailable(format!("nobody holds {obj} at the moment"));
                for w in waiters {
                    self.respond(&w, None, Err(e.clone()));
                }
                return;
            }
            _ => {
                warn!(object = %obj, response = %resp.to_json(), "the reporter refused a fetch");
                let waiters = std::mem::take(&mut o.waiters);
                let e = SyncError::from_response(
                    resp.code().unwrap_or(ResponseCode::InternalError),
                    resp.body.description_text(),
                );
                for w in waiters {
                    self.respond(&w, None, Err(e.clone()));
                }
                return;
            }
        }
        let value = resp.body.value.unwrap_or(Value::Null);
        let before = o.view.with(|s| s.version);
        if let Some(changes) = value.get("changes").and_then(Value::as_array) {
            for c in changes {
                match Change::from_entry(c) {
                    Ok(c) => self.receive_fetched(obj, c, ctx),
                    Err(e) => warn!(object = %obj, error = %e, "unreadable change in a fetch"),
                }
            }
        } else {
            match ObjectState::from_value(&value) {
                Ok(snap) if snap.url == *obj && snap.version >= before => {
                    self.stats.snapshots += 1;
                    let version = snap.version;
                    o.view.write(|s| *s = snap);
                    o.early.retain(|v, _| *v > version);
                    self.notify(obj, &SyncEvent::Resync { version });
                    self.mark(Key::Observed(obj.clone()), ctx);
                }
                Ok(_) => warn!(object = %obj, "the reporter answered an older snapshot"),
                Err(e) => warn!(object = %obj, error = %e, "unreadable snapshot"),
            }
        }
        let Some(o) = self.observed.get_mut(obj) else {
            return;
        };
        let after = o.view.with(|s| s.version);
        if after == before && !o.early.is_empty() {
            // the reporter has nothing between: what waits is newer than it knows
            warn!(object = %obj, at = after, "dropping changes the reporter does not know");
            o.early.clear();
        }
        let waiters = std::mem::take(&mut o.waiters);
        self.drain(obj, ctx);
        let v = self
            .observed
            .get(obj)
            .map_or(after, |o| o.view.with(|s| s.version));
        for w in waiters {
            self.respond(&w, None, Ok(Reply::version(v)));
        }
    }

    pub(super) fn receive_fetched(&mut self, obj: &Address, c: Change, ctx: &mut Context<Self>) {
        let Some(o) = self.observed.get(obj) else {
            return;
        };
        let current = o.view.with(|s| s.version);
        if c.version == current + 1 {
            self.apply_observed(obj, c, ctx);
        }
    }

    pub(super) fn observed_deleted(&mut self, obj: &Address, ctx: &mut Context<Self>) {
        let Some(o) = self.observed.get(obj) else {
            return;
        };
        let source = o
            .observers
            .first()
            .cloned()
            .unwrap_or_else(|| self.me.clone());
        let waiters: Vec<Message> = o.waiters.clone();
        self.notify(obj, &SyncEvent::Deleted);
        for w in waiters {
            self.respond(&w, None, Err(SyncError::NotFound(obj.to_string())));
        }
        self.forget_observed(obj, &source, ctx);
    }

    /// A message on `<obj>/changes` or `<obj>/children/` of an observed object.
    pub(super) fn on_published(&mut self, obj: &Address, msg: Message, ctx: &mut Context<Self>) {
        let subscription = channel(obj, Channel::Subscription);
        match msg.kind {
            MessageType::Delete if msg.from == subscription => {
                self.observed_deleted(obj, ctx);
                let mut reply = Reply::default();
                reply.extra.push(("source", json!(self.runtime.as_str())));
                let me = self.me.clone();
                self.respond(&msg, Some(&me), Ok(reply));
            }
            MessageType::Event if msg.from == *obj => {
                let source = msg.body.source.clone().unwrap_or_else(|| obj.clone());
                let value = msg.body.value.clone().unwrap_or(Value::Null);
                if self
                    .observed
                    .get(obj)
                    .is_some_and(|o| !o.observers.is_empty())
                {
                    self.notify(obj, &SyncEvent::Event { source, value });
                }
            }
            MessageType::Update | MessageType::Create if msg.from == *obj => {
                let mut map = body_map(&msg.body);
                map.insert("type".into(), json!(msg.kind.as_str()));
                match Change::from_entry(&Value::Object(map)) {
                    Ok(c) => self.receive(obj, c, ctx),
                    Err(e) => warn!(object = %obj, error = %e, "unreadable change dropped"),
                }
            }
            MessageType::Create if *msg.to.first() == channel(obj, Channel::Children) => {
                // a child created straight on the channel (runtime-core): every
                // receiver answers 100; it is applied once the reporter publishes it
                debug!(object = %obj, from = %msg.from, "child create heard, waiting for the reporter's");
                let progress = msg.reply_from(self.me.clone(), ResponseCode::Provisional);
                self.bus.send(progress);
            }
            _ => {
                debug!(object = %obj, from = %msg.from, kind = %msg.kind, "not from the reporter: dropped")
            }
        }
    }

    /// Renews node subscriptions and address claims, and checks every observed
    /// object (after a protocol stub came back).
    pub(super) fn resync_all(&mut self, ctx: &mut Context<Self>) {
        let reported: Vec<(Address, Address)> = self
            .reported
            .iter()
            .map(|(u, r)| (u.clone(), r.view.with(|s| s.reporter.clone())))
            .collect();
        for (obj, reporter) in &reported {
            self.subscribe_reported_at_node(obj, reporter, ctx);
        }
        if let Some(to) = self.node_allocation.clone() {
            for batch in reported.chunks(RECLAIM_BATCH) {
                let list: Vec<&str> = batch.iter().map(|(u, _)| u.as_str()).collect();
                let m = Message::new(MessageType::Create, self.me.clone(), to.clone())
                    .with_value(json!({ "reclaim": list }));
                self.post_logged(m, "re-claiming object addresses", ctx);
            }
        }
        let observed: Vec<(Address, Address)> = self
            .observed
            .iter()
            .filter_map(|(u, o)| o.observers.first().map(|h| (u.clone(), h.clone())))
            .collect();
        for (obj, observer) in observed {
            self.node_subscription(
                MessageType::Subscribe,
                Self::observed_channels(&obj),
                &observer,
                ctx,
            );
            self.fetch(&obj, ctx);
        }
    }

    pub(super) fn tick(&mut self, ctx: &mut Context<Self>) {
        let mut due = Vec::new();
        for (url, o) in self.observed.iter_mut() {
            if !o.ready || o.paused || o.fetching {
                continue;
            }
            if std::mem::take(&mut o.heard) {
                o.idle = 0;
                o.level = 0;
                continue;
            }
            o.idle += 1;
            if o.idle >= 1 << o.level {
                o.idle = 0;
                o.level = (o.level + 1).min(MAX_IDLE_LEVEL);
                due.push(url.clone());
            }
        }
        for url in due {
            self.fetch(&url, ctx);
        }
    }
}
