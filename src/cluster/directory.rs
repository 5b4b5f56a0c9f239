//! The Cluster Directory: this node's membership and heartbeat, and the owner of
//! the cross-node routing loops.
//!
//! Started by the node when `[cluster] redis` is set. Every `cluster.heartbeat_ms`
//! it writes its membership record `member:<node>` (id, URL, started-at, last
//! heartbeat; TTL `entry_ttl_ms`), refreshes every entry the node's single
//! writers asserted (one pipeline; entries Redis lost, e.g. after a restart, are
//! written again), reads the other members, logs nodes joining and leaving, and
//! answers 504 for forwarded requests whose node stopped heartbeating, and tells
//! the domain registry which nodes left ([`NodesLeft`]). A failed
//! beat marks Redis unreachable (shown on `/health`); the next one that works
//! re-asserts everything.
//!
//! It also starts the [`forwarder`](super::forward::forwarder) and the
//! [`receiver`](super::forward::receiver), and passes hand-overs the receiver
//! hears (a session of this node re-opened on another) to the session manager.

use std::collections::HashSet;
use std::sync::Arc;

use actix::prelude::*;

use super::forward;
use super::node::{ClusterNode, Control, Member};
use super::{ClusterError, NodesLeft};
use crate::node::router::Router;
use crate::node::sessions::{HandedOver, ReplacedElsewhere};
use crate::node::subscriptions::RemoteAudience;

/// Most hand-overs waiting for the session manager.
const HANDOVER_QUEUE: usize = 4096;

/// Most membership records read per `SCAN` step.
const SCAN_COUNT: usize = 200;

/// The directory actor (see the module docs).
#[derive(Debug)]
pub struct ClusterDirectory {
    cluster: Arc<ClusterNode>,
    router: Arc<Router>,
    sessions: Recipient<HandedOver>,
    replaced: Recipient<ReplacedElsewhere>,
    audiences: Recipient<RemoteAudience>,
    left: Recipient<NodesLeft>,
    /// The nodes alive at the last heartbeat (a dead node's record keeps its
    /// last heartbeat until it lapses, so comparing records alone would miss
    /// it going stale).
    alive: HashSet<String>,
    beating: bool,
}

/// The outcome of one heartbeat.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct Beat(Result<(Vec<Member>, usize), ClusterError>);

impl ClusterDirectory {
    /// A directory for `cluster`, routing what other nodes send through `router`,
    /// handing dropped and replaced sessions to `sessions` / `replaced` (the
    /// session manager), other nodes' audiences to `audiences` (the
    /// subscription manager) and the nodes it sees leave to `left` (the domain
    /// registry).
    pub fn new(
        cluster: Arc<ClusterNode>,
        router: Arc<Router>,
        sessions: Recipient<HandedOver>,
        replaced: Recipient<ReplacedElsewhere>,
        audiences: Recipient<RemoteAudience>,
        left: Recipient<NodesLeft>,
    ) -> Self {
        ClusterDirectory {
            cluster,
            router,
            sessions,
            replaced,
            audiences,
            left,
            alive: HashSet::new(),
            beating: false,
        }
    }
}

/// Writes this node's record, refreshes its entries, reads the members.
async fn beat(cluster: Arc<ClusterNode>) -> Result<(Vec<Member>, usize), ClusterError> {
    let me = cluster.me();
    let record = serde_json::to_string(&me).map_err(|e| ClusterError::Protocol(e.to_string()))?;
    cluster
        .store()
        .run::<()>(
            redis::cmd("SET")
                .arg(cluster.key(&["member", cluster.id()]))
                .arg(record)
                .arg("PX")
                .arg(cluster.ttl_ms()),
        )
        .await?;
    let again = cluster.refresh().await?;
    let pattern = cluster.key(&["member", "*"]);
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<String>) = cluster
            .store()
            .run(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT),
            )
            .await?;
        keys.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut members = Vec::with_capacity(keys.len());
    if !keys.is_empty() {
        let records: Vec<Option<String>> =
            cluster.store().run(redis::cmd("MGET").arg(&keys)).await?;
        members.extend(
            records
                .into_iter()
                .flatten()
                .filter_map(|r| serde_json::from_str::<Member>(&r).ok()),
        );
    }
    members.sort_by(|a, b| a.node.cmp(&b.node));
    Ok((members, again))
}

impl Actor for ClusterDirectory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(node = self.cluster.id(), "joining the cluster");
        actix::spawn(forward::forwarder(
            self.cluster.clone(),
            self.router.clone(),
        ));
        let (tx, mut rx) = tokio::sync::mpsc::channel(HANDOVER_QUEUE);
        actix::spawn(forward::receiver(
            self.cluster.clone(),
            self.router.clone(),
            tx,
        ));
        let sessions = self.sessions.clone();
        let replaced = self.replaced.clone();
        let audiences = self.audiences.clone();
        actix::spawn(async move {
            while let Some(c) = rx.recv().await {
                match c {
                    Control::HandOver { key, .. } => sessions.do_send(HandedOver {
                        key: Arc::from(key.as_str()),
                    }),
                    Control::Replace { runtime, .. } => {
                        replaced.do_send(ReplacedElsewhere { runtime })
                    }
                    Control::Audience {
                        node,
                        object,
                        admitted,
                    } => audiences.do_send(RemoteAudience {
                        node,
                        object,
                        admitted,
                    }),
                    Control::Invalidate { .. } => {}
                }
            }
        });
        ctx.notify(Tick);
        ctx.run_interval(self.cluster.heartbeat, |_, ctx| ctx.notify(Tick));
    }
}

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct Tick;

impl Handler<Tick> for ClusterDirectory {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        forward::expire_pending(&self.cluster, &self.router);
        if self.beating || self.cluster.has_left() {
            return;
        }
        self.beating = true;
        let me = ctx.address();
        let cluster = self.cluster.clone();
        actix::spawn(async move {
            let r = beat(cluster).await;
            me.do_send(Beat(r));
        });
    }
}

impl Handler<Beat> for ClusterDirectory {
    type Result = ();
    fn handle(&mut self, b: Beat, _: &mut Context<Self>) {
        self.beating = false;
        if self.cluster.has_left() {
            // a beat that was under way when the node left wrote the record again
            let cluster = self.cluster.clone();
            actix::spawn(async move {
                let _ = cluster.leave().await;
            });
            return;
        }
        match b.0 {
            Ok((members, again)) => {
                if !self.cluster.set_redis_up(true) {
                    tracing::info!(node = self.cluster.id(), "cluster store reachable");
                }
                if again > 0 {
                    tracing::info!(
                        entries = again,
                        "re-asserted entries the cluster store had lost"
                    );
                }
                let horizon = super::node::now_ms()
                    .saturating_sub(3 * self.cluster.heartbeat.as_millis() as u64);
                let now: HashSet<String> = members
                    .iter()
                    .filter(|m| m.heartbeat >= horizon)
                    .map(|m| m.node.clone())
                    .collect();
                let before = std::mem::replace(&mut self.alive, now.clone());
                for n in now.difference(&before) {
                    tracing::info!(node = %n, "cluster node joined");
                }
                let gone: Vec<String> = before.difference(&now).cloned().collect();
                for n in &gone {
                    tracing::info!(node = %n, "cluster node left");
                }
                self.cluster.set_members(members);
                if !gone.is_empty() {
                    self.left.do_send(NodesLeft {
                        nodes: gone,
                        alive: now,
                    });
                }
            }
            Err(e) => {
                if self.cluster.set_redis_up(false) {
                    tracing::warn!(error = %e, "cluster store unreachable");
                }
            }
        }
    }
}
