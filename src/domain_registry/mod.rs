//! The Domain Registry embedded in a messaging node, at `domain://registry.<D>`.
//!
//! It records which hyperty instances run for which user (descriptor, runtime,
//! resources, data schemes, status, lifetime) and which data objects exist, and
//! answers discovery queries about them: the reTHINK domain registry of
//! rethink-wire.md §6, held in memory by one actor instead of being reached over
//! HTTP through a connector.
//!
//! # Who sends it what
//!
//! | sender | message | reply |
//! |---|---|---|
//! | the node, for each reTHINK message whose `to` is `domain://registry.<D>`, with the session's [`Caller`] | [`RegistryRequest`] | the response [`Message`] to send back to the request's `from` |
//! | the node, when a runtime's session is lost / restored | [`RuntimeDisconnected`] / [`RuntimeReconnected`] | how many entries changed status |
//! | the cluster directory, when other nodes of the domain left | [`NodesLeft`](crate::cluster::NodesLeft) | how many entries became `disconnected` |
//! | HTTP handlers, tests, operators | typed queries ([`GetUserHyperties`], [`GetByUrl`], [`GetDataObject`], …), [`Sweep`], [`GetStats`] | typed results |
//! | **the registry**, to the node | [`RegistryNotification`] | — the node publishes it to the `/sm` subscribers of `<url>/registration` |
//!
//! The registry is the only owner of its tables; everything reaches them through
//! its mailbox.
//!
//! # Many nodes of one domain
//!
//! Given a [`ClusterStore`] ([`DomainRegistry::with_cluster`]), the N nodes of a
//! domain share one registry in Redis: each catches its table up before every
//! request, commits what a write changed before acknowledging it, and answers 503
//! while Redis cannot be reached. The `shared` module says how and why. When a
//! node dies (killed, or its membership record lapsed), every surviving node's
//! registry, told by its cluster directory, marks `disconnected` the live entries
//! of the runtimes whose session no live node holds any more — as one node does
//! when a runtime's session is lost; the first to commit changes them, the others
//! find nothing left to change.
//!
//! # Wire forms (requests from runtimes)
//!
//! Responses follow the reTHINK response rule (`id` copied, `type:"response"`,
//! `from` = `domain://registry.<D>`, `to` = the request's `from`). Found entries come
//! back in `body.value` **as JSON objects** (the reference connectors put a JSON
//! *string* there). Errors carry `code` and `description`.
//!
//! | request | effect and reply |
//! |---|---|
//! | `create {value:{url:<hyperty-type URL>, user, descriptor, expires?, resources?, dataSchemes?, runtime?, status?, p2pRequester?, p2pHandler?, guid?}}` | registers or replaces a hyperty instance → `{code:200}` |
//! | `create {value:{url:<other scheme>, name, schema, reporter, expires?, resources?, dataSchemes?, runtime?, status?, p2pRequester?}}` | registers or replaces a data object → `{code:200}` |
//! | `read {resource:"user://…" \| "/hyperty/user/<user>" [, criteria:{resources, dataSchemes}]}` | `{code:200, value:{<url>: HypertyInstance, …}}` |
//! | `read {resource:"user-guid://…"}` / `"<local>@<domain>"` / `"/hyperty/idp-identifier/<email>"` | the same, by guid / by the user `user://<domain>/<local>` |
//! | `read {resource:"<url>" \| "/hyperty/<url>" \| "/hyperty/url/<url>" \| "/dataobject/url/<url>"}` | `{code:200, value:<the entry>}` |
//! | `read {resource:"<name>" \| "/dataobject/name/<name>"}` | `{code:200, value:{<url>: DataObject, …}}` |
//! | `read {criteria:{reporter}}` / `{resource:"/dataobject/reporter/<r>"}` | data objects of a reporter, as above |
//! | `read {criteria:{dataSchemes?, resources?, reporter?}}` (no `resource`) | discovery: data objects with every scheme and resource type asked for (of that reporter), as above |
//! | `update {resource:<url>}` or `{…, method:"refresh"}` | keep-alive: restarts the entry's lifetime → `{code:200, value:{statusChanged:false, status, message:"Keep alive"}}` |
//! | `update {resource:<url>, value:{status:"live"\|"disconnected", …}}` | keep-alive plus the given fields (status, user, expires, …) → `{statusChanged, status, message:"Updated"}` |
//! | `update {resource:<url>, value:"disconnected"\|"live", attribute:"status"}` | the spec's unregister: **really sets the status** (the reference connector turned it into a keep-alive) |
//! | `delete {value:{user, url}}` / `delete {resource:<url>}` | removes the entry (of that user) → `{code:200}` |
//! | any other type | `{code:400, description:"unsupported message type …"}` |
//!
//! `<url>` may also be given as `/<scheme>/<id>` (the registration spec's
//! keep-alive form), meaning `<scheme>://<D>/<id>`. Hyperty-type URL schemes are
//! [`HYPERTY_SCHEMES`]; every other scheme names a data object.
//!
//! # Who may write
//!
//! Reads are open to every session. A `create`, `update` or `delete` is checked
//! against the [`Caller`] the node attaches (its authenticated identity, runtime
//! URL and owned addresses, never what the message claims): only URLs the session
//! owns, hyperties only under its own identity, data objects only with a
//! `reporter` it owns, and only entries it registered itself. Anything else is 403
//! with a description and changes nothing. Caps count per identity (per runtime
//! URL for anonymous sessions), whatever users the entries name.
//!
//! Codes: 400 for a missing or malformed field (the description names it, e.g.
//! `missing field 'value.user'`); 403 for a write the caller may not make; 404
//! `"Not Found"` when nothing matches; 408
//! `"Temporarily Unavailable"` with the matches as `value` when every match is
//! disconnected; 429 when a create would exceed
//! [`max_entries_per_user`](DomainRegistryConfig::max_entries_per_user) (entries per
//! caller identity) or
//! [`max_entries`](DomainRegistryConfig::max_entries).
//!
//! # Status notifications
//!
//! Whenever the status a subscriber would see changes, the registry sends
//! `{type:"update", from:"domain://registry.<D>", to:"<url>/registration",
//! body:{value:"live"|"disconnected", attribute:"status"}}` (fresh positive `id`)
//! to its [`Recipient<RegistryNotification>`]. A missing entry counts as
//! disconnected, so: a create of a live entry notifies `live`; status updates and
//! [`RuntimeDisconnected`]/[`RuntimeReconnected`] notify when the status flips; a
//! delete or an expiry of a live entry notifies `disconnected`. Notifications are
//! sent with `do_send`: they are best-effort (the reference node polls for them),
//! and one event produces at most one per affected entry, so the queue stays
//! bounded by the table size.
//!
//! # Lifetime
//!
//! Each entry lives `expires` seconds (default
//! [`default_expires_secs`](DomainRegistryConfig::default_expires_secs), capped at
//! [`max_expires_secs`](DomainRegistryConfig::max_expires_secs)) after its last
//! create, update or keep-alive. Entries that are due are removed at the start of
//! every request and by a sweep every
//! [`sweep_interval_secs`](DomainRegistryConfig::sweep_interval_secs) (or on
//! [`Sweep`]). Time comes from a [`Clock`] (the node's one clock, re-exported here
//! from [`hyperty_actors::clock`]); tests use a [`ManualClock`].
//!
//! # HTTP
//!
//! [`configure`] mounts read-only JSON routes under `/registry` (see its docs);
//! who may read them is an [`HttpReads`] in the app data.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use hyperty::domain_registry::{
//!     Caller, DomainRegistry, DomainRegistryConfig, RegistryNotification, RegistryRequest,
//!     SystemClock,
//! };
//! use hyperty::prelude::*;
//! use serde_json::json;
//!
//! /// Stands in for the node: receives the status notifications.
//! struct Node;
//! impl Actor for Node {
//!     type Context = Context<Self>;
//! }
//! impl Handler<RegistryNotification> for Node {
//!     type Result = ();
//!     fn handle(&mut self, RegistryNotification(m): RegistryNotification, _: &mut Context<Self>) {
//!         assert_eq!(m.to.first().as_str(), "hyperty://example.com/h1/registration");
//!     }
//! }
//!
//! # #[actix::main] async fn main() {
//! let registry = DomainRegistry::new(
//!     "example.com",
//!     DomainRegistryConfig::default(),
//!     Node.start().recipient(),
//!     Arc::new(SystemClock),
//! )
//! .expect("valid domain and limits")
//! .start();
//!
//! let request = |id: u64, kind: MessageType, body: serde_json::Value| {
//!     let mut m = Message::new(
//!         kind,
//!         "runtime://example.com/rt/registry".parse().unwrap(),
//!         "domain://registry.example.com".parse::<Address>().unwrap(),
//!     )
//!     .with_id(id);
//!     m.body = Body::from_map(body.as_object().cloned().unwrap()).unwrap();
//!     m
//! };
//!
//! // the session of alice's runtime, which holds hyperty://example.com/h1
//! let alice = Caller {
//!     identity: Some(Arc::from("user://idp.org/alice")),
//!     runtime: Some(Arc::from("runtime://example.com/rt")),
//!     owns: Arc::new(|url: &str| url == "hyperty://example.com/h1"),
//! };
//! let created = registry
//!     .send(RegistryRequest { caller: alice.clone(), msg: request(1, MessageType::Create, json!({"value": {
//!         "url": "hyperty://example.com/h1", "user": "user://idp.org/alice",
//!         "descriptor": "hyperty-catalogue://catalogue.example.com/.well-known/hyperty/Chat",
//!         "resources": ["chat"], "dataSchemes": ["comm"],
//!         "runtime": "runtime://example.com/rt", "expires": 3600,
//!     }}))})
//!     .await
//!     .unwrap();
//! assert_eq!(created.code(), Some(ResponseCode::Ok));
//!
//! // anyone may read; bob may not overwrite alice's entry
//! let bob = Caller {
//!     identity: Some(Arc::from("user://idp.org/bob")),
//!     runtime: Some(Arc::from("runtime://example.com/rt-bob")),
//!     owns: Arc::new(|_: &str| false),
//! };
//! let found = registry
//!     .send(RegistryRequest { caller: bob.clone(), msg: request(2, MessageType::Read, json!({
//!         "resource": "user://idp.org/alice", "criteria": {"resources": ["chat"]},
//!     }))})
//!     .await
//!     .unwrap();
//! assert_eq!(found.id, 2);
//! assert_eq!(found.from.as_str(), "domain://registry.example.com");
//! let instance = &found.body.value.unwrap()["hyperty://example.com/h1"];
//! assert_eq!(instance["status"], "live");
//! assert_eq!(instance["userID"], "user://idp.org/alice");
//!
//! let gone = registry
//!     .send(RegistryRequest { caller: bob, msg: request(3, MessageType::Delete, json!({
//!         "resource": "hyperty://example.com/h1",
//!     }))})
//!     .await
//!     .unwrap();
//! assert_eq!(gone.code(), Some(ResponseCode::Forbidden));
//! # }
//! ```

mod access;
mod config;
mod core;
mod error;
mod http;
mod model;
mod request;
mod shared;
mod table;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use actix::fut::{ready, wrap_future, ActorFutureExt, LocalBoxActorFuture};
use actix::prelude::{
    Actor, AsyncContext, AtomicResponse, Context, Handler, MessageResult, Recipient,
};
use hyperty_actors::address::Address;
use hyperty_actors::message::Message;
use tracing::{debug, info, info_span, warn, Instrument};

pub use self::access::Caller;
pub use self::config::DomainRegistryConfig;
pub use self::core::RegistryStats;
pub use self::error::DomainRegistryError;
pub use self::http::{configure, HttpReads};
pub use self::model::{rfc3339, Availability, DataObjectRecord, HypertyRecord, Record, Status};
pub use self::request::{Criteria, HYPERTY_SCHEMES, MAX_LIST_LEN, MAX_TEXT_LEN};
pub use hyperty_actors::clock::{Clock, ManualClock, SystemClock};

use self::core::{Core, Found};
use self::request::Query;
use self::shared::{CommitError, Shared, COMMIT_ATTEMPTS};
use crate::cluster::{ClusterStore, NodesLeft};

/// A reTHINK message addressed to `domain://registry.<D>`, already parsed and
/// validated by the node, with the session it comes from. Answered with the
/// response message.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Message")]
pub struct RegistryRequest {
    /// The request.
    pub msg: Message,
    /// Who sends it; writes are checked against it (see [`Caller`]).
    pub caller: Caller,
}

/// A status notification for the node to publish to the `/sm` subscribers of
/// `<url>/registration` (see the module docs for its shape and when it is sent).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct RegistryNotification(pub Message);

/// The session of `runtime` is lost: its entries become `disconnected`.
/// Answers how many entries changed.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "usize")]
pub struct RuntimeDisconnected {
    /// The runtime URL, as given in the entries' `runtime` field.
    pub runtime: String,
}

/// The session of `runtime` is back: its entries become `live`.
/// Answers how many entries changed.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "usize")]
pub struct RuntimeReconnected {
    /// The runtime URL, as given in the entries' `runtime` field.
    pub runtime: String,
}

/// Removes the expired entries now (the periodic sweep does the same). Answers how
/// many were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, actix::Message)]
#[rtype(result = "usize")]
pub struct Sweep;

/// The hyperties of a user that match `criteria`. 404 if there are none.
/// Check [`Availability::all_disconnected`] for the 408 rule.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "Result<BTreeMap<String, HypertyRecord>, DomainRegistryError>")]
pub struct GetUserHyperties {
    /// The user URL, e.g. `user://idp.org/alice`.
    pub user: String,
    /// Filters (empty: all).
    pub criteria: Criteria,
}

/// The hyperties of the user `user://<domain>/<local>` for the e-mail
/// `<local>@<domain>` that match `criteria`.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "Result<BTreeMap<String, HypertyRecord>, DomainRegistryError>")]
pub struct GetByEmail {
    /// `<local>@<domain>`.
    pub email: String,
    /// Filters (empty: all).
    pub criteria: Criteria,
}

/// The hyperties whose `guid` is this (`user-guid://<g>` or `<g>`).
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "Result<BTreeMap<String, HypertyRecord>, DomainRegistryError>")]
pub struct GetByGuid {
    /// The guid.
    pub guid: String,
}

/// The entry (hyperty or data object) at a URL.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "Result<Record, DomainRegistryError>")]
pub struct GetByUrl {
    /// The entry URL.
    pub url: String,
}

/// The data object at a URL (404 for a hyperty URL).
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "Result<DataObjectRecord, DomainRegistryError>")]
pub struct GetDataObject {
    /// The object URL.
    pub url: String,
}

/// The data objects with a name.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "Result<BTreeMap<String, DataObjectRecord>, DomainRegistryError>")]
pub struct GetDataObjectsByName {
    /// The object name.
    pub name: String,
}

/// The data objects of a reporter.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "Result<BTreeMap<String, DataObjectRecord>, DomainRegistryError>")]
pub struct GetDataObjectsByReporter {
    /// The reporter hyperty URL.
    pub reporter: String,
}

/// Sizes and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, actix::Message)]
#[rtype(result = "RegistryStats")]
pub struct GetStats;

/// The domain registry actor (see the module docs).
#[derive(Debug)]
pub struct DomainRegistry {
    core: Core,
    notify: Recipient<RegistryNotification>,
    /// Set when the domain's nodes share the registry through Redis.
    shared: Option<Shared>,
    /// The shared version the table is at (`None`: unknown, reload it whole).
    version: Option<u64>,
    /// URLs whose local entry a refused commit left unlike Redis's.
    reload: BTreeSet<String>,
}

/// A registry operation on the caught-up table, run again after a conflict.
type Op<R> = Rc<dyn Fn(&mut DomainRegistry) -> R>;
/// Its answer when the shared store cannot be reached.
type Failed<R> = Rc<dyn Fn(&DomainRegistry, DomainRegistryError) -> R>;

impl DomainRegistry {
    /// A registry for `domain` (listening at `domain://registry.<domain>`), sending
    /// status notifications to `notify` and reading time from `clock` (on a node,
    /// the node's one clock).
    ///
    /// Fails if the domain cannot form that address or a limit is unusable.
    pub fn new(
        domain: &str,
        config: DomainRegistryConfig,
        notify: Recipient<RegistryNotification>,
        clock: Arc<dyn Clock>,
    ) -> Result<DomainRegistry, DomainRegistryError> {
        Ok(DomainRegistry {
            core: Core::new(domain, config, clock)?,
            notify,
            shared: None,
            version: None,
            reload: BTreeSet::new(),
        })
    }

    /// Shares the entries with every node of the domain on the same cluster store
    /// (see [`shared`](self::shared) for how); `None` keeps them in this node.
    pub fn with_cluster(mut self, store: Option<ClusterStore>) -> DomainRegistry {
        self.shared = store.map(Shared::new);
        self
    }

    /// `domain://registry.<domain>`.
    pub fn address(&self) -> &Address {
        self.core.address()
    }

    fn flush(&mut self) {
        for m in self.core.take_notifications() {
            debug!(to = %m.to.first(), value = ?m.body.value, "registry status notification");
            self.notify.do_send(RegistryNotification(m));
        }
    }

    /// Runs `op` on a table caught up with the shared store, commits what it
    /// changed and only then sends its notifications; `failed` answers when the
    /// store cannot be reached. Without a shared store, runs `op` at once.
    fn synced<R: 'static>(
        &mut self,
        op: Op<R>,
        failed: Failed<R>,
        attempts: u32,
    ) -> LocalBoxActorFuture<Self, R> {
        let Some(shared) = self.shared.clone() else {
            let r = op(self);
            self.core.take_changed();
            self.flush();
            return Box::pin(ready(r));
        };
        let fetch = shared
            .clone()
            .fetch(self.version, std::mem::take(&mut self.reload));
        Box::pin(wrap_future::<_, Self>(fetch.in_current_span()).then(
            move |fetched, act, _| -> LocalBoxActorFuture<Self, R> {
                let changes = match fetched {
                    Ok(c) => c,
                    Err(e) => {
                        act.version = None;
                        return Box::pin(ready(failed(act, e.into())));
                    }
                };
                let version = act.core.sync(changes);
                act.version = Some(version);
                let r = op(act);
                let rows = act.core.take_changed();
                if rows.is_empty() {
                    act.flush();
                    return Box::pin(ready(r));
                }
                let urls: Vec<String> = rows.iter().map(|(u, _)| u.clone()).collect();
                let commit = shared.commit(version, rows).in_current_span();
                Box::pin(wrap_future::<_, Self>(commit).then(
                    move |done, act, _| -> LocalBoxActorFuture<Self, R> {
                        let err = match done {
                            Ok(v) => {
                                act.version = Some(v);
                                act.flush();
                                return Box::pin(ready(r));
                            }
                            Err(e) => e,
                        };
                        act.core.take_notifications();
                        match err {
                            CommitError::Conflict if attempts > 1 => {
                                debug!("another node wrote the registry first; again");
                                act.reload.extend(urls);
                                act.synced(op, failed, attempts - 1)
                            }
                            CommitError::Conflict => {
                                act.reload.extend(urls);
                                let e = DomainRegistryError::Shared(format!(
                                    "other nodes wrote first {COMMIT_ATTEMPTS} times"
                                ));
                                Box::pin(ready(failed(act, e)))
                            }
                            CommitError::Cluster(e) => {
                                // whether the commit ran is unknown: reload whole
                                act.version = None;
                                Box::pin(ready(failed(act, e.into())))
                            }
                        }
                    },
                ))
            },
        ))
    }

    /// [`synced`](Self::synced) for operations answering a count (0 when the
    /// store cannot be reached; the failure is logged).
    fn counted(&mut self, op: Op<usize>) -> LocalBoxActorFuture<Self, usize> {
        let failed: Failed<usize> = Rc::new(|_, e| {
            warn!(error = %e, "shared domain registry unreachable");
            0
        });
        self.synced(op, failed, COMMIT_ATTEMPTS)
    }

    /// [`synced`](Self::synced) for typed queries.
    fn queried<T: 'static>(
        &mut self,
        q: Query,
        pick: fn(Found) -> Option<T>,
    ) -> AtomicResponse<Self, Result<T, DomainRegistryError>> {
        let op: Op<Result<T, DomainRegistryError>> = Rc::new(move |act| {
            act.core
                .query(&q)
                .and_then(|f| pick(f).ok_or(DomainRegistryError::NotFound))
        });
        AtomicResponse::new(self.synced(op, Rc::new(|_, e| Err(e)), COMMIT_ATTEMPTS))
    }
}

fn hyperties(f: Found) -> Option<BTreeMap<String, HypertyRecord>> {
    match f {
        Found::Hyperties(m) => Some(m),
        _ => None,
    }
}

fn data_objects(f: Found) -> Option<BTreeMap<String, DataObjectRecord>> {
    match f {
        Found::DataObjects(m) => Some(m),
        _ => None,
    }
}

fn entry(f: Found) -> Option<Record> {
    match f {
        Found::Entry(r) => Some(*r),
        _ => None,
    }
}

fn data_object(f: Found) -> Option<DataObjectRecord> {
    match entry(f) {
        Some(Record::DataObject(d)) => Some(d),
        _ => None,
    }
}

impl Actor for DomainRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.core.config().sweep_interval(), |act, ctx| {
            // waited on, so it does not interleave with a request's catch-up and commit
            let sweep = act.counted(Rc::new(|act| act.core.expire_due()));
            ctx.wait(sweep.map(|_, _, _| ()));
        });
    }
}

impl Handler<RegistryRequest> for DomainRegistry {
    type Result = AtomicResponse<Self, Message>;

    fn handle(
        &mut self,
        RegistryRequest { msg: req, caller }: RegistryRequest,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let span = info_span!("domain_registry", id = req.id, kind = %req.kind, from = %req.from,
            identity = caller.identity.as_deref().unwrap_or("-"));
        let _entered = span.enter();
        let req = Rc::new(req);
        let failed_req = req.clone();
        let op: Op<Message> = Rc::new(move |act| act.core.handle(&req, &caller));
        let failed: Failed<Message> = Rc::new(move |act, e| act.core.refuse(&failed_req, e));
        AtomicResponse::new(self.synced(op, failed, COMMIT_ATTEMPTS))
    }
}

impl Handler<RuntimeDisconnected> for DomainRegistry {
    type Result = AtomicResponse<Self, usize>;

    fn handle(&mut self, m: RuntimeDisconnected, _: &mut Context<Self>) -> Self::Result {
        let _entered = info_span!("domain_registry", runtime_disconnected = %m.runtime).entered();
        AtomicResponse::new(self.counted(Rc::new(move |act| {
            act.core
                .set_runtime_status(&m.runtime, Status::Disconnected)
        })))
    }
}

impl Handler<NodesLeft> for DomainRegistry {
    type Result = AtomicResponse<Self, usize>;

    fn handle(&mut self, m: NodesLeft, _: &mut Context<Self>) -> Self::Result {
        let span = info_span!("domain_registry", nodes_left = ?m.nodes);
        let _entered = span.enter();
        let Some(shared) = self.shared.clone() else {
            return AtomicResponse::new(Box::pin(ready(0)));
        };
        let failed: Failed<Vec<String>> = Rc::new(|_, e| {
            warn!(error = %e, "shared domain registry unreachable");
            Vec::new()
        });
        let runtimes = self.synced(Rc::new(|act| act.core.live_runtimes()), failed, 1);
        let alive = m.alive;
        let orphans = runtimes.then(move |runtimes, _, _| {
            wrap_future::<_, Self>(shared.holders(runtimes).in_current_span()).map(
                move |held, _, _| match held {
                    Ok(held) => held
                        .into_iter()
                        .filter(|(_, node)| node.as_ref().is_none_or(|n| !alive.contains(n)))
                        .map(|(rt, _)| rt)
                        .collect::<Vec<_>>(),
                    Err(e) => {
                        warn!(error = %e, "cannot read where the runtimes' sessions are");
                        Vec::new()
                    }
                },
            )
        });
        AtomicResponse::new(Box::pin(orphans.then(|orphans, act, _| {
            if orphans.is_empty() {
                return Box::pin(ready(0usize)) as LocalBoxActorFuture<Self, usize>;
            }
            info!(
                runtimes = orphans.len(),
                "runtimes of nodes that left: their entries are disconnected"
            );
            act.counted(Rc::new(move |act| {
                orphans
                    .iter()
                    .map(|rt| act.core.set_runtime_status(rt, Status::Disconnected))
                    .sum()
            }))
        })))
    }
}

impl Handler<RuntimeReconnected> for DomainRegistry {
    type Result = AtomicResponse<Self, usize>;

    fn handle(&mut self, m: RuntimeReconnected, _: &mut Context<Self>) -> Self::Result {
        let _entered = info_span!("domain_registry", runtime_reconnected = %m.runtime).entered();
        AtomicResponse::new(self.counted(Rc::new(move |act| {
            act.core.set_runtime_status(&m.runtime, Status::Live)
        })))
    }
}

impl Handler<Sweep> for DomainRegistry {
    type Result = AtomicResponse<Self, usize>;

    fn handle(&mut self, _: Sweep, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.counted(Rc::new(|act| act.core.expire_due())))
    }
}

impl Handler<GetUserHyperties> for DomainRegistry {
    type Result =
        AtomicResponse<Self, Result<BTreeMap<String, HypertyRecord>, DomainRegistryError>>;

    fn handle(&mut self, m: GetUserHyperties, _: &mut Context<Self>) -> Self::Result {
        self.queried(
            Query::User {
                user: m.user,
                criteria: m.criteria,
            },
            hyperties,
        )
    }
}

impl Handler<GetByEmail> for DomainRegistry {
    type Result =
        AtomicResponse<Self, Result<BTreeMap<String, HypertyRecord>, DomainRegistryError>>;

    fn handle(&mut self, m: GetByEmail, _: &mut Context<Self>) -> Self::Result {
        self.queried(
            Query::Email {
                email: m.email,
                criteria: m.criteria,
            },
            hyperties,
        )
    }
}

impl Handler<GetByGuid> for DomainRegistry {
    type Result =
        AtomicResponse<Self, Result<BTreeMap<String, HypertyRecord>, DomainRegistryError>>;

    fn handle(&mut self, m: GetByGuid, _: &mut Context<Self>) -> Self::Result {
        self.queried(
            Query::Guid {
                guid: m.guid,
                criteria: Criteria::default(),
            },
            hyperties,
        )
    }
}

impl Handler<GetByUrl> for DomainRegistry {
    type Result = AtomicResponse<Self, Result<Record, DomainRegistryError>>;

    fn handle(&mut self, m: GetByUrl, _: &mut Context<Self>) -> Self::Result {
        self.queried(Query::Url(m.url), entry)
    }
}

impl Handler<GetDataObject> for DomainRegistry {
    type Result = AtomicResponse<Self, Result<DataObjectRecord, DomainRegistryError>>;

    fn handle(&mut self, m: GetDataObject, _: &mut Context<Self>) -> Self::Result {
        self.queried(Query::Url(m.url), data_object)
    }
}

impl Handler<GetDataObjectsByName> for DomainRegistry {
    type Result =
        AtomicResponse<Self, Result<BTreeMap<String, DataObjectRecord>, DomainRegistryError>>;

    fn handle(&mut self, m: GetDataObjectsByName, _: &mut Context<Self>) -> Self::Result {
        self.queried(Query::DataObjectName(m.name), data_objects)
    }
}

impl Handler<GetDataObjectsByReporter> for DomainRegistry {
    type Result =
        AtomicResponse<Self, Result<BTreeMap<String, DataObjectRecord>, DomainRegistryError>>;

    fn handle(&mut self, m: GetDataObjectsByReporter, _: &mut Context<Self>) -> Self::Result {
        self.queried(Query::DataObjectReporter(m.reporter), data_objects)
    }
}

impl Handler<GetStats> for DomainRegistry {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.stats())
    }
}
