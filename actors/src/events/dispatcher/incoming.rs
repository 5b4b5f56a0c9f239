//! Device-level delivery to local entities, and events arriving from other runtimes.

use super::*;

impl EventDispatcher {
    /// Device-level routing to one local entity. `None`: no delivery notification
    /// applies (the event was consumed by the dispatcher or silently dropped).
    pub(super) fn deliver_local(
        &mut self,
        ev: &Arc<Event>,
        target: &Address,
        role: Role,
        ctx: &mut Context<Self>,
    ) -> Option<DeliveryStatus> {
        let now = self.now();
        let id = ev.id();
        let pending = self.commit_pending();
        let inbox_capacity = self.config.durable_inbox_capacity;
        let rec = match self.entities.get_mut(target.as_str()) {
            Some(r) => r,
            None => {
                self.stats.bad_destinations += 1;
                return Some(DeliveryStatus::BadDestination);
            }
        };
        let durable = rec.durable.is_some();
        if rec.buffer.is_duplicate(&id) {
            self.stats.duplicates += 1;
            trace!(%target, %id, "duplicate dropped");
            if durable && pending {
                // the first copy may not be on disk yet: acknowledge after it is
                self.defer(Deferred::Notify {
                    ev: ev.clone(),
                    target: target.clone(),
                    status: DeliveryStatus::Duplicate,
                });
                return None;
            }
            return Some(DeliveryStatus::Duplicate);
        }
        let kind = ev.event_type().as_str();
        if kind == DELIVERY_NOTIFICATION {
            self.stats.notifications_received += 1;
        }
        if ev.is_expired(now) {
            self.stats.expired += 1;
            return Some(DeliveryStatus::Expired);
        }
        let app_event = !matches!(kind, DELIVERY_NOTIFICATION | RPC_REQUEST | RPC_RESPONSE);
        if let Some(inbox) = rec.durable.as_ref().filter(|_| app_event) {
            if inbox.events.len() + inbox.pending >= inbox_capacity {
                // not accepted, not acknowledged: the sender tries again later
                debug!(%target, %id, "durable inbox full: event left to its sender");
                return None;
            }
        }
        let referenced = match ev.in_response_to() {
            None => None,
            Some(irt) => match self.references.get_for(&irt, target.as_str()) {
                Some(e) => Some(e),
                None => {
                    self.stats.no_reference += 1;
                    if kind == DELIVERY_NOTIFICATION || kind == RPC_RESPONSE {
                        debug!(%target, "response to an unknown event dropped");
                        return None;
                    }
                    return Some(DeliveryStatus::NoReference);
                }
            },
        };
        let rec = self.entities.get_mut(target.as_str())?;
        let evicted = rec.buffer.insert(id, ev.expiry_timestamp(), now);
        let owner = rec.owner.clone();
        // the referenced event as this recipient may see it
        let referenced = referenced.map(|r| self.strip_bcc(&r, &owner));
        if let Some(irt) = ev.in_response_to() {
            if kind != DELIVERY_NOTIFICATION {
                self.record_response(irt, target, ev.sender());
            }
        }
        if durable {
            let forget = evicted.map(|old| DurableOp::Forget {
                entity: target.clone(),
                id: old,
            });
            if app_event {
                let copy = self.strip_bcc(ev, &owner);
                self.accept_durable(ev, copy, target, owner, referenced, forget);
                return None;
            }
            if let Some(op) = forget {
                self.write_durable(vec![op]);
            }
        }
        match kind {
            DELIVERY_NOTIFICATION => {
                self.consume_notification(ev, target);
                None
            }
            RPC_REQUEST => {
                if role == Role::To {
                    self.serve_rpc(ev.clone(), target.clone(), ctx);
                }
                Some(DeliveryStatus::Ok)
            }
            RPC_RESPONSE => {
                self.complete_rpc(ev, target);
                Some(DeliveryStatus::Ok)
            }
            _ => {
                let copy = self.strip_bcc(ev, &owner);
                self.hand_to_listeners(ev, &copy, target, &owner, &referenced);
                Some(DeliveryStatus::Ok)
            }
        }
    }

    /// Holds `ev` for responses and gives the recipient's `copy` to the owner's
    /// listeners.
    pub(super) fn hand_to_listeners(
        &mut self,
        ev: &Arc<Event>,
        copy: &Arc<Event>,
        target: &Address,
        owner: &Address,
        referenced: &Option<Arc<Event>>,
    ) {
        self.references.hold(ev, target);
        let fired = self.listeners.fire(owner, target, copy, referenced);
        self.stats.delivered += 1;
        self.stats.listener_overflow += fired.overflowed as u64;
        trace!(%target, id = %ev.id(), listeners = fired.delivered, "event delivered");
    }

    /// A response from `responder` to the event `about` sent by local `sender`:
    /// that primary recipient will not time out.
    pub(super) fn record_response(
        &mut self,
        about: EventId,
        sender: &Address,
        responder: &Address,
    ) {
        if let Some(rec) = self.sent.get_mut(&(about, sender.clone())) {
            if rec.primaries.contains(responder) {
                rec.responded.insert(responder.clone());
            }
        }
    }

    /// The recipient's copy: `bcc` keeps only entities of the recipient's owner (for
    /// a forwarded event, of the forwarding `bcc` and of the original one).
    pub(super) fn strip_bcc(&self, ev: &Arc<Event>, owner: &Address) -> Arc<Event> {
        let keep = |list: &[Address]| -> Vec<Address> {
            list.iter()
                .filter(|a| self.entities.owns(owner, a.as_str()))
                .cloned()
                .collect()
        };
        let original = keep(ev.addressing().bcc());
        let forwarding = ev.forwarding().map(|f| keep(f.addressing().bcc()));
        let unchanged = original.len() == ev.addressing().bcc().len()
            && match (&forwarding, ev.forwarding()) {
                (Some(k), Some(f)) => k.len() == f.addressing().bcc().len(),
                _ => true,
            };
        if unchanged {
            ev.clone()
        } else {
            Arc::new(ev.with_bcc(original, forwarding))
        }
    }

    pub(super) fn incoming(&mut self, msg: Message, ctx: &mut Context<Self>) {
        self.stats.received += 1;
        let span = tracing::debug_span!("events.incoming", msg = msg.id, from = %msg.from);
        let _enter = span.enter();
        let stash: Option<HashSet<String>> = msg
            .body
            .extra
            .get(RECIPIENTS_KEY)
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            });
        let Some(value) = msg.body.value else {
            self.stats.invalid += 1;
            debug!("event message without a value");
            return;
        };
        let raw = match RawEvent::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                self.stats.invalid += 1;
                debug!(error = %e, "unreadable event dropped");
                return;
            }
        };
        let ev = match Event::from_raw(&raw).and_then(|e| check_protocol(&e).map(|()| e)) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                self.invalid_received(&raw, stash.as_ref(), &e, ctx);
                return;
            }
        };
        if self.entities.is_exclusive(ev.sender().as_str()) {
            self.stats.invalid += 1;
            warn!(sender = %ev.sender(), "event claiming a local sender arrived from elsewhere: dropped");
            return;
        }
        let targets: Vec<(Address, Role)> = ev
            .destinations()
            .recipients()
            .filter(|(a, _)| stash.as_ref().is_none_or(|s| s.contains(a.as_str())))
            .map(|(a, r)| (a.clone(), r))
            .collect();
        let sender = ev.sender().clone();
        let mut unknown = Vec::new();
        for (t, role) in targets {
            if !self.entities.contains(t.as_str()) {
                // a durable entity whose application has not registered it yet:
                // no answer, so the sender tries again
                if !self.restored.contains_key(&t) {
                    unknown.push(t);
                }
                continue;
            }
            let req = PolicyRequest {
                event: &ev,
                sender: &sender,
                recipient: &t,
                direction: EventDirection::Incoming,
                via: None,
            };
            if let PolicyDecision::Deny(_) = decide(&self.policies, &req) {
                self.stats.refused += 1;
                self.notify(&ev, &t, DeliveryStatus::Refused, ctx);
                continue;
            }
            if let Some(status) = self.deliver_local(&ev, &t, role, ctx) {
                self.notify(&ev, &t, status, ctx);
            }
        }
        if !unknown.is_empty() {
            self.notify_bad(&ev, unknown, ctx);
        }
    }

    /// An invalid event from elsewhere: `invalid` to the sender for each local
    /// primary recipient, if wanted and the sender can be named.
    pub(super) fn invalid_received(
        &mut self,
        raw: &RawEvent,
        stash: Option<&HashSet<String>>,
        error: &EventParseError,
        ctx: &mut Context<Self>,
    ) {
        self.stats.invalid += 1;
        debug!(error = %error, "invalid event received");
        if !raw.delivery_notification_wanted || raw.event_type == DELIVERY_NOTIFICATION {
            return;
        }
        let (sender, primaries) = match &raw.forwarding {
            Some(f) => (&f.source, &f.to),
            None => (&raw.source, &raw.to),
        };
        let Ok(sender) = Address::parse(sender) else {
            return;
        };
        let about = raw.reference_id();
        let mut seen = HashSet::new();
        for p in primaries {
            if !seen.insert(p.as_str())
                || !self.entities.contains(p)
                || stash.is_some_and(|s| !s.contains(p))
            {
                continue;
            }
            let Ok(reporter) = Address::parse(p) else {
                continue;
            };
            match notification_about(
                reporter,
                sender.clone(),
                about,
                DeliveryStatus::Invalid,
                Vec::new(),
            ) {
                Ok(dn) => {
                    self.stats.notifications_sent += 1;
                    self.originate(dn, ctx);
                }
                Err(e) => warn!(error = %e, "cannot build a delivery notification"),
            }
        }
    }
}

/// Rules of the protocols the dispatcher handles itself.
pub(super) fn check_protocol(ev: &Event) -> Result<(), EventParseError> {
    let rpc = |why: &str| EventParseError::Protocol(format!("invalid RPC event: {why}"));
    match ev.event_type().as_str() {
        DELIVERY_NOTIFICATION => check_notification(ev).map(|_| ()),
        RPC_REQUEST => {
            if ev.in_response_to().is_some() {
                return Err(rpc("a request cannot respond to an event"));
            }
            if !ev.addressing_sensitive() || ev.forwarding().is_some() {
                return Err(rpc("must be addressing sensitive and not forwarded"));
            }
            parse_request_payload(ev.payload().unwrap_or_default()).map(|_| ())
        }
        RPC_RESPONSE => {
            if ev.addressing().to().len() != 1 || ev.in_response_to().is_none() {
                return Err(rpc(
                    "a response goes to the request's source and refers to it",
                ));
            }
            if !ev.addressing_sensitive() || ev.forwarding().is_some() {
                return Err(rpc("must be addressing sensitive and not forwarded"));
            }
            parse_response_payload(ev.payload().unwrap_or_default()).map(|_| ())
        }
        _ => Ok(()),
    }
}
