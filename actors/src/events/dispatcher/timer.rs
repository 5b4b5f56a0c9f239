//! The timer: reference timeouts, RPC deadlines, purges, cache expiry and retransmission.

use super::*;

impl EventDispatcher {
    pub(super) fn purge_sent(&mut self, now: u64) {
        self.sent.retain(|_, r| {
            let timeout_pending = r.timeout_at.is_some() && !r.timed_out;
            now <= r.retain_until || timeout_pending
        });
    }

    pub(super) fn tick(&mut self) -> ResponseActFuture<Self, ()> {
        let now = self.now();
        let _span = tracing::trace_span!("events.tick", now).entered();
        // reference timeouts (decision 16: primary recipients only)
        let mut timeouts = Vec::new();
        while let Some((t, id, sender)) = self.timeouts.first().cloned() {
            if t > now {
                break;
            }
            self.timeouts.pop_first();
            let key = (id, sender);
            if let Some(rec) = self.sent.get_mut(&key) {
                if rec.timeout_at == Some(t) && !rec.timed_out {
                    rec.timed_out = true;
                    for p in &rec.primaries {
                        if !rec.responded.contains(p) {
                            timeouts.push((key.clone(), p.clone()));
                        }
                    }
                }
            }
        }
        let mut fired = Vec::new();
        for (key, recipient) in timeouts {
            self.report(&key, ReportKind::Timeout { recipient });
            fired.push(key);
        }
        for key in fired {
            self.release_if_done(&key);
        }
        // RPC deadlines
        let late: Vec<EventId> = self
            .rpc_calls
            .iter()
            .filter(|(_, c)| now > c.deadline)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(c) = self.rpc_calls.remove(&k) {
                self.sent.remove(&(k, c.from.clone()));
                let _ = c.tx.send(Err(RpcCallError::Timeout));
            }
        }
        if now.saturating_sub(self.last_purge) >= PURGE_PERIOD_MS {
            self.last_purge = now;
            self.purge_sent(now);
            self.references.purge_expired(now);
            let forget: Vec<DurableOp> = self
                .entities
                .purge_buffers(now)
                .into_iter()
                .map(|(entity, id)| DurableOp::Forget { entity, id })
                .collect();
            if !forget.is_empty() {
                self.write_durable(forget);
            }
        }
        let take = self.cache.send(TakeDue { now_ms: now });
        Box::pin(take.into_actor(self).then(move |due, act, ctx| match due {
            Ok(due) => act.handle_due(due, ctx),
            Err(_) => Box::pin(fut::ready(())),
        }))
    }

    pub(super) fn handle_due(
        &mut self,
        due: DueEvents,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, ()> {
        let _ = ctx;
        for e in &due.expired {
            self.stats.expired += 1;
            self.report_error(
                &e.event,
                &e.recipients,
                DeliveryErrorCode::Expired,
                "expired in the event cache",
            );
        }
        for e in &due.exhausted {
            self.report_error(
                &e.event,
                &e.recipients,
                DeliveryErrorCode::BadDestination,
                "no route after the last retransmission attempt",
            );
        }
        for e in due.expired.iter().chain(&due.exhausted) {
            self.uncache(&(e.event.id(), e.sender.clone()));
        }
        if due.retry.is_empty() {
            return Box::pin(fut::ready(()));
        }
        let all: Vec<Address> = due
            .retry
            .iter()
            .flat_map(|e| e.recipients.iter().cloned())
            .collect();
        let lookup = self.lookup(all);
        let entries = due.retry;
        Box::pin(lookup.into_actor(self).map(move |hops, act, ctx| {
            let mut hops = hops.into_iter();
            for entry in entries {
                let entry_hops: Vec<(Route, bool)> =
                    hops.by_ref().take(entry.recipients.len()).collect();
                act.retransmit(entry, entry_hops, ctx);
            }
        }))
    }

    pub(super) fn retransmit(
        &mut self,
        entry: CachedEvent,
        hops: Vec<(Route, bool)>,
        ctx: &mut Context<Self>,
    ) {
        let now = self.now();
        let ev = Arc::new(entry.event);
        let key = (ev.id(), ev.sender().clone());
        let mut groups: Vec<(Address, Vec<Address>)> = Vec::new();
        let mut keep = Vec::new();
        let mut bad = Vec::new();
        for (a, hop) in entry.recipients.into_iter().zip(hops) {
            let replicated = self.entities.get(a.as_str()).is_some_and(|r| r.replicated);
            match self.classify(&a, &hop, replicated).0 {
                Hop::Remote(stub) => match groups.iter_mut().find(|(s, _)| *s == stub) {
                    Some((_, g)) => g.push(a),
                    None => groups.push((stub, vec![a])),
                },
                Hop::Unreachable => keep.push(a),
                Hop::Bad => bad.push(a),
                Hop::Skip => {}
            }
        }
        if let Some(rec) = self.sent.get_mut(&key) {
            rec.retain_until = after(now, self.config.report_retention);
        }
        let mut congested = false;
        let mut awaiting = Vec::new();
        for (stub, group) in groups {
            let n = group.len() as u64;
            let primaries = self.owing_notifications(&ev, &group);
            match self.transmit(&ev, &stub, group) {
                Ok(()) => {
                    self.stats.retransmitted += n;
                    awaiting.extend(primaries);
                }
                Err(failed) => {
                    congested = true;
                    keep.extend(failed);
                }
            }
        }
        if !bad.is_empty() {
            self.notify_bad(&ev, bad, ctx);
        }
        if keep.is_empty() {
            // nothing waits for a route any more
            self.uncache(&key);
        }
        if keep.is_empty() && awaiting.is_empty() {
            self.cache.do_send(CacheDone { key: entry.key });
        } else {
            let awaiting_notifications = keep.is_empty();
            keep.extend(awaiting);
            self.cache.do_send(CacheRetry {
                key: entry.key,
                recipients: keep,
                now_ms: now,
                congested,
                awaiting_notifications,
            });
        }
    }

    /// No recipient of this dispatch waits in the cache any more.
    fn uncache(&mut self, key: &(EventId, Address)) {
        if let Some(rec) = self.sent.get_mut(key) {
            rec.cached = false;
        }
        self.release_if_done(key);
    }
}
