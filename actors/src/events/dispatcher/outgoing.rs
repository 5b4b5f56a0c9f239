//! Events from local senders: route determination, policy, local delivery, one transmission per stub, the cache.

use super::*;

impl EventDispatcher {
    /// An event the dispatcher itself sends (notifications, RPC responses).
    pub(super) fn originate(&mut self, ev: Event, ctx: &mut Context<Self>) {
        match self.outgoing(Arc::new(ev), false, None, None, ctx) {
            Routed::Now(Ok(())) => {}
            Routed::Now(Err(e)) => debug!(error = %e, "internal event not sent"),
            Routed::Later(fut) => {
                ctx.spawn(fut.map(|r, _, _| {
                    if let Err(e) = r {
                        debug!(error = %e, "internal event not sent");
                    }
                }));
            }
        }
    }

    pub(super) fn outgoing(
        &mut self,
        ev: Arc<Event>,
        app: bool,
        reporter: Option<Reporter>,
        reference_timeout: Option<Duration>,
        ctx: &mut Context<Self>,
    ) -> Routed {
        let span = tracing::debug_span!("events.outgoing", id = %ev.id(), kind = %ev.event_type(), sender = %ev.sender());
        let _enter = span.enter();
        let now = self.now();
        let sender = ev.sender().clone();
        let key = (ev.id(), sender.clone());
        if reporter.is_some() || reference_timeout.is_some() {
            if self.sent.len() >= self.config.max_pending_reports && !self.sent.contains_key(&key) {
                self.purge_sent(now);
            }
            if self.sent.len() >= self.config.max_pending_reports && !self.sent.contains_key(&key) {
                return Routed::Now(Err(EventError::Full("pending reports")));
            }
            let timeout_at = reference_timeout.map(|t| after(now, t));
            if let Some(t) = timeout_at {
                self.timeouts.insert((t, key.0, key.1.clone()));
            }
            let replaced = self.sent.insert(
                key.clone(),
                SentRecord {
                    event: ev.clone(),
                    reporter,
                    primaries: ev.destinations().to().to_vec(),
                    resolved: HashSet::new(),
                    responded: HashSet::new(),
                    timeout_at,
                    timed_out: false,
                    cached: false,
                    retain_until: after(now, self.config.report_retention),
                },
            );
            // a re-sent event replaces its record: its old timeout entry goes too, so
            // the timeout index stays as bounded as the records
            if let Some(t) = replaced.and_then(|r| r.timeout_at) {
                if Some(t) != timeout_at {
                    self.timeouts.remove(&(t, key.0, key.1.clone()));
                }
            }
        }
        if app {
            // the sender holds what it sent, for responses to it (decision 13); the
            // dispatcher's own notifications and RPC responses are never responded to
            self.references.hold(&ev, &sender);
        }
        let targets: Vec<(Address, Role)> = ev
            .destinations()
            .recipients()
            .map(|(a, r)| (a.clone(), r))
            .collect();
        if ev.is_expired(now) {
            // decision 12: nothing is transmitted; every recipient gets EXPIRED
            self.stats.expired += 1;
            let all: Vec<Address> = targets.into_iter().map(|(a, _)| a).collect();
            self.report_error(
                &ev,
                &all,
                DeliveryErrorCode::Expired,
                "expired before dispatch",
            );
            return Routed::Now(Ok(()));
        }
        let mut local = Vec::new();
        let mut need = Vec::new();
        for (a, role) in targets {
            match self.entities.get(a.as_str()) {
                Some(rec) => {
                    if rec.replicated {
                        need.push((a.clone(), role));
                    }
                    local.push((a, role));
                }
                None => need.push((a, role)),
            }
        }
        if need.is_empty() {
            let r = self.route_outgoing(&ev, app, local, Vec::new(), ctx);
            if r.is_err() {
                self.sent.remove(&key);
            }
            return Routed::Now(r);
        }
        let lookup = self.lookup(need.iter().map(|(a, _)| a.clone()).collect());
        Routed::Later(Box::pin(lookup.into_actor(self).map(
            move |hops, act, ctx| {
                let remote = need
                    .into_iter()
                    .zip(hops)
                    .map(|((a, role), hop)| {
                        let replicated = act.entities.get(a.as_str()).is_some_and(|r| r.replicated);
                        let hop = act.classify(&a, &hop, replicated);
                        (a, role, hop)
                    })
                    .collect();
                let r = act.route_outgoing(&ev, app, local, remote, ctx);
                if r.is_err() {
                    act.sent.remove(&key);
                }
                r
            },
        )))
    }

    /// Resolves addresses to routes, plus the set of live stubs.
    pub(super) fn lookup(&self, addrs: Vec<Address>) -> BoxFuture<'static, Vec<(Route, bool)>> {
        let routes: Vec<_> = addrs
            .into_iter()
            .map(|a| self.resolver.send(Resolve(a)))
            .collect();
        let stubs = self.stubs.send(ListStubs);
        async move {
            let routes = join_all(routes).await;
            let live: HashSet<Address> = stubs
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s.status == StubStatus::Live)
                .map(|s| s.url)
                .collect();
            routes
                .into_iter()
                .map(|r| {
                    let route = r.unwrap_or(Route::Unknown);
                    let is_live = matches!(&route, Route::Stub(u) if live.contains(u));
                    (route, is_live)
                })
                .collect()
        }
        .boxed()
    }

    /// Where `addr` goes given its route. Unknown addresses under this runtime or
    /// under one of its entities are bad destinations, not cached: no route will
    /// ever appear for them.
    pub(super) fn classify(
        &self,
        addr: &Address,
        hop: &(Route, bool),
        replicated: bool,
    ) -> (Hop, Option<Address>) {
        match hop {
            (Route::Stub(url), true) => (Hop::Remote(url.clone()), Some(url.clone())),
            (Route::Stub(url), false) => (Hop::Unreachable, Some(url.clone())),
            _ if replicated => (Hop::Skip, None),
            (Route::Local, _) => (Hop::Bad, None),
            (Route::Unknown, _)
                if addr.is_under(self.bus.runtime_url().as_str())
                    || self.entities.under_local_entity(addr) =>
            {
                (Hop::Bad, None)
            }
            (Route::Unknown, _) => (Hop::Unreachable, None),
        }
    }

    /// Phases 3 and 4 for an event from a local sender.
    pub(super) fn route_outgoing(
        &mut self,
        ev: &Arc<Event>,
        app: bool,
        local: Vec<(Address, Role)>,
        remote: Vec<(Address, Role, (Hop, Option<Address>))>,
        ctx: &mut Context<Self>,
    ) -> Result<(), EventError> {
        let sender = ev.sender().clone();
        let remote: Vec<_> = remote
            .into_iter()
            .map(|(a, role, (hop, via))| (a, role, hop, via))
            .collect();
        // policy enforcement: all first, atomically for applications
        let mut denied: HashSet<Address> = HashSet::new();
        if !self.policies.is_empty() {
            let checks = local
                .iter()
                .map(|(a, _)| (a, EventDirection::Local, None))
                .chain(
                    remote
                        .iter()
                        .filter(|r| matches!(r.2, Hop::Remote(_) | Hop::Unreachable))
                        .map(|(a, _, _, via)| (a, EventDirection::Outgoing, via.as_ref())),
                );
            for (recipient, direction, via) in checks {
                let req = PolicyRequest {
                    event: ev,
                    sender: &sender,
                    recipient,
                    direction,
                    via,
                };
                if let PolicyDecision::Deny(why) = decide(&self.policies, &req) {
                    if app {
                        self.stats.refused += 1;
                        return Err(EventError::PermissionDenied(format!(
                            "event to {recipient} refused by policy: {why}"
                        )));
                    }
                    denied.insert(recipient.clone());
                }
            }
        }
        if app {
            self.stats.dispatched += 1;
        }
        let key = (ev.id(), sender.clone());
        // local recipients
        for (t, role) in local {
            if denied.contains(&t) {
                continue;
            }
            self.report(
                &key,
                ReportKind::Sending {
                    recipient: t.clone(),
                },
            );
            if let Some(status) = self.deliver_local(ev, &t, role, ctx) {
                self.notify(ev, &t, status, ctx);
            }
        }
        // remote recipients
        let mut groups: Vec<(Address, Vec<Address>)> = Vec::new();
        let mut unreachable = Vec::new();
        let mut bad = Vec::new();
        for (a, _, hop, _) in remote {
            if denied.contains(&a) {
                continue;
            }
            match hop {
                Hop::Remote(stub) => match groups.iter_mut().find(|(s, _)| *s == stub) {
                    Some((_, g)) => g.push(a),
                    None => groups.push((stub, vec![a])),
                },
                Hop::Unreachable => unreachable.push(a),
                Hop::Bad => bad.push(a),
                Hop::Skip => {}
            }
        }
        if !bad.is_empty() {
            self.notify_bad(ev, bad, ctx);
        }
        let mut awaiting = Vec::new();
        for (stub, group) in groups {
            let primaries = self.owing_notifications(ev, &group);
            match self.transmit(ev, &stub, group) {
                Ok(()) => awaiting.extend(primaries),
                Err(failed) => unreachable.extend(failed),
            }
        }
        if !unreachable.is_empty() {
            self.cache_put(ev, unreachable, ctx);
        }
        if !awaiting.is_empty() {
            self.await_notifications(ev, awaiting);
        }
        self.release_if_done(&key);
        Ok(())
    }

    /// The recipients in `group` that owe a delivery notification for `ev`: its
    /// primary recipients, if notifications are wanted.
    pub(super) fn owing_notifications(&self, ev: &Event, group: &[Address]) -> Vec<Address> {
        if !ev.delivery_notification_wanted() {
            return Vec::new();
        }
        group
            .iter()
            .filter(|a| ev.is_primary(a.as_str()))
            .cloned()
            .collect()
    }

    /// `ev` was handed to stubs for `recipients`, which owe delivery
    /// notifications: it waits in the cache until they answer (see the cache's
    /// module docs). Not a caching in the spec's sense: no `onCaching`.
    pub(super) fn await_notifications(&mut self, ev: &Arc<Event>, recipients: Vec<Address>) {
        self.cache.do_send(CachePut {
            event: (**ev).clone(),
            sender: ev.sender().clone(),
            recipients,
            now_ms: self.now(),
            awaiting_notifications: true,
        });
    }

    /// One message through the bus to the stub serving `group`, with `bcc` narrowed
    /// to the group. Returns the group back if the bus could not hand the message to
    /// the stub (full mailbox, stub gone, route vanished): such a failure is not
    /// reported to a notification's sender, so it is read off the bus's failure
    /// counters, which only move synchronously within `send`. A concurrent failure
    /// elsewhere can make a delivered event look failed; it is then cached and
    /// retransmitted, and its recipient drops the copy as a duplicate.
    pub(super) fn transmit(
        &mut self,
        ev: &Arc<Event>,
        stub: &Address,
        group: Vec<Address>,
    ) -> Result<(), Vec<Address>> {
        let in_group = |list: &[Address]| -> Vec<Address> {
            list.iter().filter(|a| group.contains(a)).cloned().collect()
        };
        let original = in_group(ev.addressing().bcc());
        let forwarding = ev.forwarding().map(|f| in_group(f.addressing().bcc()));
        let copy = ev.with_bcc(original, forwarding);
        let to = match group.as_slice() {
            [one] => To::One(one.clone()),
            _ => match To::many(group.clone()) {
                Some(to) => to,
                None => return Ok(()),
            },
        };
        let id = self.bus.next_id();
        let msg = Message::new(MessageType::Event, self.address.clone(), to)
            .with_id(id)
            .with_value(copy.to_value());
        let failures = |s: crate::bus::BusStats| s.busy + s.unavailable + s.not_found;
        let before = failures(self.bus.stats());
        self.bus.send(msg);
        if failures(self.bus.stats()) != before {
            debug!(%stub, id = %ev.id(), "transmission refused by the bus");
            return Err(group);
        }
        trace!(%stub, id = %ev.id(), "event transmitted");
        self.stats.transmissions += 1;
        self.transmitted.record(id, ev.clone(), group.clone());
        let key = (ev.id(), ev.sender().clone());
        for r in &group {
            self.report(
                &key,
                ReportKind::Sending {
                    recipient: r.clone(),
                },
            );
        }
        Ok(())
    }

    pub(super) fn cache_put(
        &mut self,
        ev: &Arc<Event>,
        recipients: Vec<Address>,
        ctx: &mut Context<Self>,
    ) {
        let req = self.cache.send(CachePut {
            event: (**ev).clone(),
            sender: ev.sender().clone(),
            recipients: recipients.clone(),
            now_ms: self.now(),
            awaiting_notifications: false,
        });
        let key = (ev.id(), ev.sender().clone());
        if let Some(rec) = self.sent.get_mut(&key) {
            rec.cached = true;
        }
        let ev = ev.clone();
        ctx.spawn(req.into_actor(self).map(move |r, act, _| {
            if !matches!(r, Ok(Ok(_))) {
                if let Some(rec) = act.sent.get_mut(&key) {
                    rec.cached = false;
                }
            }
            match r {
                Ok(Ok(_)) => {
                    act.stats.cached += 1;
                    act.report(&key, ReportKind::Caching);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "event not cached");
                    act.report_error(&ev, &recipients, DeliveryErrorCode::Unknown, &e.to_string());
                }
                Err(_) => {
                    act.report_error(
                        &ev,
                        &recipients,
                        DeliveryErrorCode::Unknown,
                        "event cache unavailable",
                    );
                }
            }
            act.release_if_done(&key);
        }));
    }
}
