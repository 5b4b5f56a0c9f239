//! Callbacks and delivery notifications: who hears what about a dispatch.

use super::*;

impl EventDispatcher {
    pub(super) fn report(&mut self, key: &(EventId, Address), kind: ReportKind) {
        let Some(rec) = self.sent.get_mut(key) else {
            return;
        };
        match (&rec.reporter, &kind) {
            (Some(Reporter::App(cb)), _) => cb.report(&rec.event, kind),
            (Some(Reporter::Rpc), ReportKind::Error { error, .. }) => {
                if let Some(call) = self.rpc_calls.remove(&key.0) {
                    let _ = call.tx.send(Err(RpcCallError::Delivery(error.clone())));
                }
                self.sent.remove(key);
            }
            _ => {}
        }
    }

    /// A delivery result for `recipients` of the event `id` sent by local `sender`.
    /// Forgets a dispatch once nothing more can be reported about it: no
    /// recipient waits in the cache, its reference timeout (if any) has fired, and
    /// every primary recipient was heard from (if notifications are wanted).
    pub(super) fn release_if_done(&mut self, key: &(EventId, Address)) {
        let done = self.sent.get(key).is_some_and(|r| {
            !r.cached
                && (r.timeout_at.is_none() || r.timed_out)
                && (!r.event.delivery_notification_wanted()
                    || r.primaries.iter().all(|p| r.resolved.contains(p)))
        });
        if done {
            self.sent.remove(key);
        }
    }

    pub(super) fn on_result(
        &mut self,
        id: EventId,
        sender: &Address,
        recipients: &[Address],
        status: DeliveryStatus,
        detail: &str,
    ) {
        let key = (id, sender.clone());
        for r in recipients {
            let fresh = match self.sent.get_mut(&key) {
                // only primary recipients report (and nobody can report for them)
                Some(rec) if rec.primaries.contains(r) => rec.resolved.insert(r.clone()),
                Some(_) => false,
                None => return,
            };
            if !fresh {
                continue; // at most one onDelivery/onError per recipient (decision 17)
            }
            let kind = match status.error_code() {
                None => ReportKind::Delivery {
                    recipient: r.clone(),
                    duplicate: status == DeliveryStatus::Duplicate,
                },
                Some(code) => ReportKind::Error {
                    recipient: r.clone(),
                    error: DeliveryError::new(code, format!("{status}{detail}")),
                },
            };
            self.report(&key, kind);
        }
    }

    pub(super) fn report_error(
        &mut self,
        ev: &Event,
        recipients: &[Address],
        code: DeliveryErrorCode,
        message: &str,
    ) {
        let key = (ev.id(), ev.sender().clone());
        for r in recipients {
            self.report(
                &key,
                ReportKind::Error {
                    recipient: r.clone(),
                    error: DeliveryError::new(code, message),
                },
            );
        }
    }

    /// Applies the delivery-notification rules to one recipient's outcome.
    pub(super) fn notify(
        &mut self,
        ev: &Arc<Event>,
        recipient: &Address,
        status: DeliveryStatus,
        ctx: &mut Context<Self>,
    ) {
        if !ev.delivery_notification_wanted() || !ev.is_primary(recipient.as_str()) {
            return;
        }
        let sender = ev.sender().clone();
        if self.entities.contains(sender.as_str()) {
            self.on_result(
                ev.id(),
                &sender,
                std::slice::from_ref(recipient),
                status,
                "",
            );
            return;
        }
        match notification(recipient.clone(), ev, status, Vec::new()) {
            Ok(dn) => {
                self.stats.notifications_sent += 1;
                self.originate(dn, ctx);
            }
            Err(e) => warn!(error = %e, "cannot build a delivery notification"),
        }
    }

    /// `badDestination` for the unknown recipients among `unknown` that are primary.
    pub(super) fn notify_bad(
        &mut self,
        ev: &Arc<Event>,
        unknown: Vec<Address>,
        ctx: &mut Context<Self>,
    ) {
        self.stats.bad_destinations += unknown.len() as u64;
        if !ev.delivery_notification_wanted() {
            return;
        }
        let primaries: Vec<Address> = unknown
            .into_iter()
            .filter(|a| ev.is_primary(a.as_str()))
            .collect();
        if primaries.is_empty() {
            return;
        }
        let sender = ev.sender().clone();
        if self.entities.contains(sender.as_str()) {
            self.on_result(
                ev.id(),
                &sender,
                &primaries,
                DeliveryStatus::BadDestination,
                "",
            );
            return;
        }
        match notification(
            self.address.clone(),
            ev,
            DeliveryStatus::BadDestination,
            primaries,
        ) {
            Ok(dn) => {
                self.stats.notifications_sent += 1;
                self.originate(dn, ctx);
            }
            Err(e) => warn!(error = %e, "cannot build a delivery notification"),
        }
    }

    pub(super) fn consume_notification(&mut self, dn: &Event, target: &Address) {
        let (Ok(status), Some(about)) = (check_notification(dn), dn.in_response_to()) else {
            return;
        };
        let recipients: Vec<Address> =
            if status == DeliveryStatus::BadDestination && !dn.addressing().cc().is_empty() {
                dn.addressing().cc().to_vec()
            } else {
                vec![dn.source().clone()]
            };
        // answered: no more retransmissions to them
        self.cache.do_send(CacheAck {
            id: about,
            sender: target.clone(),
            recipients: recipients.clone(),
        });
        self.on_result(about, target, &recipients, status, "");
        self.release_if_done(&(about, target.clone()));
    }
}
