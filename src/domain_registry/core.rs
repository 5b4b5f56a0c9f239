//! The registry's logic without the actor: requests in, responses and status
//! notifications out. Synchronous, so it can be property-tested directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyperty_actors::address::Address;
use hyperty_actors::error::ToResponseCode;
use hyperty_actors::message::{Message, MessageType, ResponseCode, MAX_MESSAGE_ID};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::access::Caller;
use super::config::DomainRegistryConfig;
use super::error::DomainRegistryError;
use super::model::{Availability, DataObjectRecord, HypertyRecord, Record, Status};
use super::request::{self, email_user, Draft, Op, Patch, Query};
use super::shared::Changes;
use super::table::{Slot, Table};
use super::Clock;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Found {
    /// Hyperties by URL.
    Hyperties(BTreeMap<String, HypertyRecord>),
    /// Data objects by URL.
    DataObjects(BTreeMap<String, DataObjectRecord>),
    /// One entry.
    Entry(Box<Record>),
}

impl Found {
    fn to_value(&self) -> Value {
        let v = match self {
            Found::Hyperties(m) => serde_json::to_value(m),
            Found::DataObjects(m) => serde_json::to_value(m),
            Found::Entry(r) => serde_json::to_value(r),
        };
        // Records serialise to plain strings, numbers and lists: this cannot fail.
        v.unwrap_or_default()
    }

    fn all_disconnected(&self) -> bool {
        match self {
            Found::Hyperties(m) => m.all_disconnected(),
            Found::DataObjects(m) => m.all_disconnected(),
            Found::Entry(r) => r.all_disconnected(),
        }
    }
}

enum Outcome {
    Done,
    Value(Value),
    Found(Found),
}

/// Counters and sizes, for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RegistryStats {
    /// Entries of both kinds.
    pub entries: usize,
    /// Hyperty instances.
    pub hyperties: usize,
    /// Data objects.
    pub data_objects: usize,
    /// Users with at least one hyperty.
    pub users: usize,
    /// Requests answered.
    pub requests: u64,
    /// Entries removed because they expired.
    pub expired: u64,
    /// Status notifications emitted.
    pub notifications: u64,
}

#[derive(Debug)]
pub(crate) struct Core {
    address: Address,
    domain: String,
    config: DomainRegistryConfig,
    clock: Arc<dyn Clock>,
    table: Table,
    last_notification_id: u64,
    outbox: Vec<Message>,
    stats: RegistryStats,
}

impl Core {
    pub(crate) fn new(
        domain: &str,
        config: DomainRegistryConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Core, DomainRegistryError> {
        config.validate()?;
        let address: Address = format!("domain://registry.{domain}")
            .parse()
            .ok()
            .filter(|a: &Address| a.path().is_empty() && !domain.is_empty())
            .ok_or_else(|| {
                DomainRegistryError::InvalidConfig(format!("{domain:?} is not a domain name"))
            })?;
        Ok(Core {
            address,
            domain: domain.to_owned(),
            table: Table::new(config.max_entries, config.max_entries_per_user),
            config,
            clock,
            last_notification_id: 0,
            outbox: Vec::new(),
            stats: RegistryStats::default(),
        })
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    pub(crate) fn config(&self) -> &DomainRegistryConfig {
        &self.config
    }

    /// Answers one request of `caller`; notifications it causes wait in the outbox.
    pub(crate) fn handle(&mut self, req: &Message, caller: &Caller) -> Message {
        self.expire_due();
        self.stats.requests += 1;
        let result = request::parse(req, &self.domain).and_then(|op| self.apply(op, caller));
        self.respond(req, result)
    }

    /// The error response to `req`.
    pub(crate) fn refuse(&self, req: &Message, err: DomainRegistryError) -> Message {
        self.respond(req, Err(err))
    }

    /// Runs a typed lookup.
    pub(crate) fn query(&mut self, q: &Query) -> Result<Found, DomainRegistryError> {
        self.expire_due();
        self.lookup(q)
    }

    /// Removes every entry whose lifetime is over. Returns how many.
    pub(crate) fn expire_due(&mut self) -> usize {
        let due = self.table.due(self.clock.system_time());
        for url in &due {
            if let Some(old) = self.table.remove(url) {
                self.stats.expired += 1;
                debug!(url = %url, "registry entry expired");
                self.status_changed(url, old.status(), None);
            }
        }
        due.len()
    }

    /// Marks every entry of `runtime` with `status`. Returns how many changed.
    /// The runtimes with at least one `live` entry.
    pub(crate) fn live_runtimes(&self) -> Vec<String> {
        self.table.live_runtimes()
    }

    pub(crate) fn set_runtime_status(&mut self, runtime: &str, status: Status) -> usize {
        let now = self.clock.system_time();
        let mut changed = 0;
        for url in self.table.urls_of_runtime(runtime) {
            if let Some(before) = self.table.set_status(&url, status, now) {
                if before != status {
                    changed += 1;
                    self.status_changed(&url, before, Some(status));
                }
            }
        }
        changed
    }

    /// Brings the table to what another node (or Redis) holds: `changes.rows`
    /// replace the entries at their URLs, or the whole table when `changes.full`.
    /// Answers the version the table is then at.
    pub(crate) fn sync(&mut self, changes: Changes) -> u64 {
        if changes.full {
            self.table.clear();
        }
        for (url, slot) in changes.rows {
            self.table.load(&url, slot);
        }
        changes.version
    }

    /// The entries changed since the last call (`None`: removed), for a shared
    /// registry to write through.
    pub(crate) fn take_changed(&mut self) -> Vec<(String, Option<Slot>)> {
        self.table.take_dirty()
    }

    pub(crate) fn take_notifications(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.outbox)
    }

    pub(crate) fn stats(&self) -> RegistryStats {
        let entries = self.table.len();
        let hyperties = self.table.count_hyperties();
        RegistryStats {
            entries,
            hyperties,
            data_objects: entries - hyperties,
            users: self.table.count_users(),
            ..self.stats
        }
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.table.check_invariants();
    }

    fn apply(&mut self, op: Op, caller: &Caller) -> Result<Outcome, DomainRegistryError> {
        match op {
            Op::Create(draft) => self.create(draft, caller),
            Op::Read(q) => self.lookup(&q).map(Outcome::Found),
            Op::Update { url, patch } => self.update(&url, &patch, caller),
            Op::Delete { url, user } => self.delete(&url, user.as_deref(), caller),
        }
    }

    fn clamp_expires(&self, expires: Option<u64>) -> u64 {
        expires
            .unwrap_or(self.config.default_expires_secs)
            .clamp(1, self.config.max_expires_secs)
    }

    fn deadline(now: SystemTime, expires: u64) -> SystemTime {
        now.checked_add(Duration::from_secs(expires)).unwrap_or(now)
    }

    fn create(&mut self, draft: Draft, caller: &Caller) -> Result<Outcome, DomainRegistryError> {
        let holder = caller.may_create(&draft.record, self.table.holder(draft.record.url()))?;
        let now = self.clock.system_time();
        let expires = self.clamp_expires(draft.expires);
        let mut record = draft.record;
        let before = self
            .table
            .get(record.url())
            .map(|r| (r.status(), r.starting_time()));
        match &mut record {
            Record::Hyperty(h) => h.expires = expires,
            Record::DataObject(d) => d.expires = expires,
        }
        record.set_times(Some(before.map_or(now, |(_, start)| start)), now);
        let url = record.url().to_owned();
        let status = record.status();
        self.table
            .insert(record, holder, Self::deadline(now, expires))?;
        debug!(url = %url, holder = %holder, replaced = before.is_some(), "registry entry created");
        self.status_changed(
            &url,
            before.map_or(Status::Disconnected, |(s, _)| s),
            Some(status),
        );
        Ok(Outcome::Done)
    }

    fn update(
        &mut self,
        url: &str,
        patch: &Patch,
        caller: &Caller,
    ) -> Result<Outcome, DomainRegistryError> {
        let now = self.clock.system_time();
        let (old, held_by) = self
            .table
            .get(url)
            .cloned()
            .zip(self.table.holder(url))
            .ok_or(DomainRegistryError::NotFound)?;
        let holder = caller.may_update(url, held_by, patch)?.to_owned();
        let mut record = old.clone();
        let expires = patch
            .expires
            .map(|e| self.clamp_expires(Some(e)))
            .unwrap_or(old.expires());
        apply_patch(&mut record, patch, expires);
        // a keep-alive changes nothing but the times
        let keep_alive = record == old;
        record.set_times(None, now);
        let status = record.status();
        self.table
            .insert(record, &holder, Self::deadline(now, expires))?;
        self.status_changed(url, old.status(), Some(status));
        Ok(Outcome::Value(json!({
            "statusChanged": old.status() != status,
            "status": status,
            "message": if keep_alive { "Keep alive" } else { "Updated" },
        })))
    }

    fn delete(
        &mut self,
        url: &str,
        user: Option<&str>,
        caller: &Caller,
    ) -> Result<Outcome, DomainRegistryError> {
        let held_by = self
            .table
            .get(url)
            .filter(|r| user.is_none_or(|u| r.owner() == u))
            .and(self.table.holder(url))
            .ok_or(DomainRegistryError::NotFound)?;
        caller.may_delete(url, held_by)?;
        if let Some(old) = self.table.remove(url) {
            debug!(url = %url, "registry entry deleted");
            self.status_changed(url, old.status(), None);
        }
        Ok(Outcome::Done)
    }

    fn lookup(&self, q: &Query) -> Result<Found, DomainRegistryError> {
        let hyperties = |it: &mut dyn Iterator<Item = &HypertyRecord>| {
            let m: BTreeMap<_, _> = it.map(|h| (h.url.clone(), h.clone())).collect();
            (!m.is_empty())
                .then_some(Found::Hyperties(m))
                .ok_or(DomainRegistryError::NotFound)
        };
        let objects = |it: &mut dyn Iterator<Item = &DataObjectRecord>| {
            let m: BTreeMap<_, _> = it.map(|d| (d.url.clone(), d.clone())).collect();
            (!m.is_empty())
                .then_some(Found::DataObjects(m))
                .ok_or(DomainRegistryError::NotFound)
        };
        match q {
            Query::User { user, criteria } => hyperties(
                &mut self
                    .table
                    .hyperties_of_user(user)
                    .filter(|h| criteria.matches(h)),
            ),
            Query::Email { email, criteria } => {
                let user = email_user(email).ok_or(DomainRegistryError::NotFound)?;
                hyperties(
                    &mut self
                        .table
                        .hyperties_of_user(&user)
                        .filter(|h| criteria.matches(h)),
                )
            }
            Query::Guid { guid, criteria } => hyperties(
                &mut self
                    .table
                    .hyperties_of_guid(guid)
                    .filter(|h| criteria.matches(h)),
            ),
            Query::Url(url) => self
                .table
                .get(url)
                .cloned()
                .map(|r| Found::Entry(Box::new(r)))
                .ok_or(DomainRegistryError::NotFound),
            Query::DataObjectName(name) => objects(&mut self.table.data_objects_named(name)),
            Query::DataObjectReporter(r) => objects(&mut self.table.data_objects_of_reporter(r)),
            Query::DataObjects { criteria, reporter } => objects(
                &mut self
                    .table
                    .data_objects()
                    .filter(|d| reporter.as_ref().is_none_or(|r| &d.reporter == r))
                    .filter(|d| criteria.matches_object(d)),
            ),
        }
    }

    fn respond(&self, req: &Message, result: Result<Outcome, DomainRegistryError>) -> Message {
        let reply = |code| req.reply_from(self.address.clone(), code);
        let resp = match result {
            Ok(Outcome::Done) => reply(ResponseCode::Ok),
            Ok(Outcome::Value(v)) => reply(ResponseCode::Ok).with_value(v),
            Ok(Outcome::Found(found)) if found.all_disconnected() => {
                let err = DomainRegistryError::TemporarilyUnavailable;
                let mut r = reply(err.response_code()).with_value(found.to_value());
                r.body.description = Some(err.to_string());
                r
            }
            Ok(Outcome::Found(found)) => reply(ResponseCode::Ok).with_value(found.to_value()),
            Err(err) => {
                let mut r = reply(err.response_code());
                r.body.description = Some(err.to_string());
                r
            }
        };
        debug!(
            code = resp.code().map_or(0, ResponseCode::as_u16),
            "registry answered"
        );
        resp
    }

    /// Queues `update {value:<status>, attribute:"status"}` to `<url>/registration`
    /// if the status a subscriber sees changes (a missing entry counts as
    /// disconnected).
    fn status_changed(&mut self, url: &str, before: Status, after: Option<Status>) {
        let after = after.unwrap_or(Status::Disconnected);
        if before == after {
            return;
        }
        let to = match Address::try_from(format!("{url}/registration")) {
            Ok(a) => a,
            Err(e) => {
                warn!(url = %url, error = %e, "no registration address for this entry; status not notified");
                return;
            }
        };
        self.last_notification_id = self.last_notification_id % MAX_MESSAGE_ID + 1;
        let mut m = Message::new(MessageType::Update, self.address.clone(), to)
            .with_id(self.last_notification_id)
            .with_value(json!(after.as_str()));
        m.body.extra.insert("attribute".to_owned(), json!("status"));
        self.stats.notifications += 1;
        self.outbox.push(m);
    }
}

fn replace<T: Clone>(slot: &mut T, with: &Option<T>) {
    if let Some(v) = with {
        *slot = v.clone();
    }
}

fn replace_opt<T: Clone>(slot: &mut Option<T>, with: &Option<T>) {
    if with.is_some() {
        slot.clone_from(with);
    }
}

fn apply_patch(record: &mut Record, p: &Patch, expires: u64) {
    if let Some(s) = p.status {
        record.set_status(s);
    }
    match record {
        Record::Hyperty(h) => {
            h.expires = expires;
            replace(&mut h.user, &p.user);
            replace(&mut h.descriptor, &p.descriptor);
            replace(&mut h.resources, &p.resources);
            replace(&mut h.data_schemes, &p.data_schemes);
            replace_opt(&mut h.guid, &p.guid);
            replace_opt(&mut h.runtime, &p.runtime);
            replace_opt(&mut h.p2p_requester, &p.p2p_requester);
            replace_opt(&mut h.p2p_handler, &p.p2p_handler);
        }
        Record::DataObject(d) => {
            d.expires = expires;
            replace(&mut d.name, &p.name);
            replace(&mut d.schema, &p.schema);
            replace(&mut d.reporter, &p.reporter);
            replace(&mut d.resources, &p.resources);
            replace(&mut d.data_schemes, &p.data_schemes);
            replace_opt(&mut d.runtime, &p.runtime);
            replace_opt(&mut d.p2p_requester, &p.p2p_requester);
        }
    }
}
