//! Cross-node routing: the forwarder (frames out to other nodes) and the
//! receiver (frames in from them, and the control channel).
//!
//! A frame whose recipient no local session owns is handed by the session core
//! (or by [`Router::publish`] for node notifications) to the forwarder's queue
//! without waiting. The forwarder takes what is queued in batches and, in order,
//! resolves each recipient — the node owning the address (`owner:`, the runtime
//! URL it lies under `rt:`, or the hyperty URL above it) and the nodes with `/sm`
//! subscribers to it (`subs:`) — from its cache, asking Redis (one pipeline for
//! the whole batch) only for what is not cached. Then it publishes the frame,
//! unchanged, once per node on that node's channel (one pipeline per batch). A
//! cached answer lives `cluster.cache_ms` and is dropped earlier when any node
//! announces a change of that address on the control channel.
//!
//! A frame nothing local took and no node owns or subscribes to is answered as
//! on one node (404 to requests and events); while Redis is unreachable it is
//! answered 503; a request for a node that stopped heartbeating, or that sits
//! unanswered for `cluster.request_timeout_ms` (its node died meanwhile), is
//! answered 504.
//!
//! The receiver routes what arrives on this node's channel to local sessions
//! only ([`Router::route_from_peer`]: a frame crosses one node hop at most), and
//! applies control messages: cache invalidations, and session hand-overs (the
//! session re-opened on another node is dropped here).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use futures_util::StreamExt;
use hyperty_actors::message::{MessageType, ResponseCode};

use super::node::{ClusterNode, Control, Input, Pending};
use super::ClusterError;
use crate::node::frame::Header;
use crate::node::router::{Router, MAX_SUBTREE_DEPTH};
use crate::server::refusal::{error_frame, refusal_rule};

/// Most frames taken from the queue at once.
const BATCH: usize = 256;

/// Most addresses the forwarder keeps resolutions of.
const CACHE_LIMIT: usize = 100_000;

/// Where an address lives in the cluster.
#[derive(Debug, Clone, Default)]
struct Resolved {
    owner: Option<String>,
    subscribers: Vec<String>,
}

/// The keys whose values say where `to` lives, most specific owner first, then
/// the subscriber set.
fn lookups(cluster: &ClusterNode, to: &str) -> (Vec<String>, String) {
    let mut owners = vec![cluster.key(&["owner", to])];
    if to.starts_with("runtime://") || to.starts_with("hyperty-runtime://") {
        if let Some(path_start) = to
            .find("://")
            .and_then(|i| to[i + 3..].find('/').map(|j| i + 3 + j))
        {
            let mut end = to.len();
            loop {
                owners.push(cluster.key(&["rt", &to[..end]]));
                match to[..end].rfind('/') {
                    Some(i) if i > path_start => end = i,
                    _ => break,
                }
            }
        }
    } else if let Some(rest) = to.strip_prefix("hyperty://") {
        if let Some(slash) = rest.find('/') {
            let path_start = "hyperty://".len() + slash;
            let mut end = to.len();
            for _ in 0..MAX_SUBTREE_DEPTH {
                match to[..end].rfind('/') {
                    Some(i) if i > path_start => end = i,
                    _ => break,
                }
                owners.push(cluster.key(&["owner", &to[..end]]));
            }
        }
    }
    (owners, cluster.key(&["subs", to]))
}

/// The node a stored value names (`"<node>"` or `"<node> …"`).
fn node_of(value: &str) -> &str {
    value.split(' ').next().unwrap_or(value)
}

async fn resolve_all(
    cluster: &ClusterNode,
    addrs: &[String],
) -> Result<Vec<Resolved>, ClusterError> {
    let mut pipe = redis::pipe();
    let mut shape = Vec::with_capacity(addrs.len());
    for a in addrs {
        let (owners, subs) = lookups(cluster, a);
        shape.push(owners.len());
        pipe.cmd("MGET").arg(&owners);
        pipe.cmd("SMEMBERS").arg(subs);
    }
    let values: Vec<redis::Value> = cluster.store().pipe(&pipe).await?;
    let mut values = values.into_iter();
    let mut out = Vec::with_capacity(addrs.len());
    for _ in shape {
        let owners: Vec<Option<String>> = parse(values.next())?;
        let subs: Vec<String> = parse(values.next())?;
        let owner = owners
            .into_iter()
            .flatten()
            .map(|v| node_of(&v).to_owned())
            .next()
            .filter(|n| n != cluster.id());
        let subscribers = subs.into_iter().filter(|n| n != cluster.id()).collect();
        out.push(Resolved { owner, subscribers });
    }
    Ok(out)
}

fn parse<T: redis::FromRedisValue + Default>(v: Option<redis::Value>) -> Result<T, ClusterError> {
    match v {
        Some(v) => T::from_redis_value(v).map_err(|e| ClusterError::Protocol(e.to_string())),
        None => Ok(T::default()),
    }
}

/// Answers the sender of `frame` with `code`, as the session core would.
fn answer(router: &Router, sender: &str, frame: &str, code: ResponseCode, why: &str) {
    let Ok(h) = Header::parse(frame) else { return };
    let rule = refusal_rule(&router.stats, &h.kind, code);
    router.metrics.refused(code, rule.report);
    if rule.report {
        let text = error_frame(Some(h.id.to_json()), h.to.first(), Some(&h.from), code, why);
        router.deliver(sender, &ByteString::from(text));
    }
}

/// The forwarder loop (see the module docs); ends when the node's queue closes.
pub(crate) async fn forwarder(cluster: Arc<ClusterNode>, router: Arc<Router>) {
    let Some(mut rx) = cluster.take_forward_queue() else {
        return;
    };
    let mut cache: HashMap<String, (Resolved, Instant)> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        tracing::trace!(frames = batch.len(), "cluster.forward batch");
        let now = Instant::now();
        let mut forwards = Vec::with_capacity(batch.len());
        for input in batch.drain(..) {
            match input {
                Input::Invalidate(addrs) if addrs.is_empty() => cache.clear(),
                Input::Invalidate(addrs) => {
                    for a in addrs {
                        cache.remove(&a);
                    }
                }
                Input::Forward(f) => forwards.push(f),
            }
        }
        let mut missing: Vec<String> = Vec::new();
        for f in &forwards {
            for t in &f.targets {
                let fresh = cache
                    .get(t)
                    .is_some_and(|(_, at)| now.duration_since(*at) < cluster.cache_ttl);
                if !fresh && !missing.contains(t) {
                    missing.push(t.clone());
                }
            }
        }
        let mut unavailable = None;
        if !missing.is_empty() {
            match resolve_all(&cluster, &missing).await {
                Ok(found) => {
                    if cache.len() + missing.len() > CACHE_LIMIT {
                        cache.clear();
                    }
                    for (a, r) in missing.into_iter().zip(found) {
                        cache.insert(a, (r, now));
                    }
                }
                Err(e) => unavailable = Some(e),
            }
        }
        let mut publish = redis::pipe();
        let mut sent: Vec<(usize, String)> = Vec::new();
        let members = cluster.members();
        for (i, f) in forwards.iter().enumerate() {
            let mut nodes: Vec<&str> = Vec::new();
            if f.broadcast {
                nodes.extend(
                    members
                        .iter()
                        .filter(|m| m.node != cluster.id() && cluster.is_alive(&m.node))
                        .map(|m| m.node.as_str()),
                );
            }
            let mut owned = false;
            let mut dead = None;
            for t in &f.targets {
                let Some((r, _)) = cache.get(t) else { continue };
                if let Some(o) = &r.owner {
                    if cluster.is_alive(o) {
                        owned = true;
                        if !nodes.contains(&o.as_str()) {
                            nodes.push(o);
                        }
                    } else {
                        dead = Some(o.clone());
                    }
                }
                for s in r.subscribers.iter().filter(|s| cluster.is_alive(s)) {
                    if !nodes.contains(&s.as_str()) {
                        nodes.push(s);
                    }
                }
            }
            let mut publish_to = |nodes: Vec<&str>| {
                for n in nodes {
                    publish
                        .cmd("PUBLISH")
                        .arg(cluster.channel_of(n))
                        .arg(&*f.frame);
                    sent.push((i, n.to_owned()));
                }
            };
            let Some(sender) = f.sender.as_deref().filter(|_| f.answer) else {
                publish_to(nodes);
                continue;
            };
            if nodes.is_empty() {
                let target = f.targets.first().map_or("", String::as_str);
                match (&unavailable, dead) {
                    (Some(e), _) => answer(
                        &router,
                        sender,
                        &f.frame,
                        ResponseCode::ServiceUnavailable,
                        &format!("cannot reach the cluster to route to {target}: {e}"),
                    ),
                    (None, Some(n)) => answer(
                        &router,
                        sender,
                        &f.frame,
                        ResponseCode::Other(504),
                        &format!("the node holding {target} ({n}) is gone"),
                    ),
                    (None, None) => answer(
                        &router,
                        sender,
                        &f.frame,
                        ResponseCode::NotFound,
                        &format!("no route to {target}"),
                    ),
                }
                continue;
            }
            if owned {
                track(&cluster, sender, &f.frame, nodes[0]);
            }
            publish_to(nodes);
        }
        if sent.is_empty() {
            continue;
        }
        match cluster.store().pipe::<Vec<i64>>(&publish).await {
            Ok(heard) => {
                router
                    .stats
                    .forwarded
                    .fetch_add(sent.len() as u64, std::sync::atomic::Ordering::Relaxed);
                // nobody listens on a node's channel: it is gone
                for ((i, node), n) in sent.iter().zip(heard) {
                    if n == 0 {
                        tracing::debug!(node = %node, "a forwarded frame found nobody on the node's channel");
                        let f = &forwards[*i];
                        if let Some(s) = f.sender.as_deref().filter(|_| f.answer) {
                            if untrack(&cluster, &f.frame).is_some() {
                                answer(
                                    &router,
                                    s,
                                    &f.frame,
                                    ResponseCode::Other(504),
                                    &format!("node {node} is gone"),
                                );
                            }
                        }
                    }
                }
            }
            Err(e) => {
                for (i, _) in &sent {
                    let f = &forwards[*i];
                    if let Some(s) = f.sender.as_deref().filter(|_| f.answer) {
                        untrack(&cluster, &f.frame);
                        answer(
                            &router,
                            s,
                            &f.frame,
                            ResponseCode::ServiceUnavailable,
                            &format!("cannot reach the cluster: {e}"),
                        );
                    }
                }
            }
        }
    }
}

/// Remembers a request sent to `node`, to answer it 504 if its node dies.
fn track(cluster: &ClusterNode, sender: &str, frame: &str, node: &str) {
    let Ok(h) = Header::parse(frame) else { return };
    if !h.kind.expects_response() {
        return;
    }
    let p = Pending {
        sender: Arc::from(sender),
        node: node.to_owned(),
        deadline: Instant::now() + cluster.request_timeout,
        to: h.to.first().to_owned(),
        from: h.from.to_string(),
        id: h.id.to_json(),
    };
    let mut pending = cluster.pending.lock().unwrap_or_else(|e| e.into_inner());
    if pending.len() < super::node::FORWARD_QUEUE {
        pending.insert((h.from.to_string(), h.id.to_json().to_string()), p);
    }
}

fn untrack(cluster: &ClusterNode, frame: &str) -> Option<Pending> {
    let h = Header::parse(frame).ok()?;
    cluster
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(h.from.to_string(), h.id.to_json().to_string()))
}

/// Answers 504 to every forwarded request whose node stopped heartbeating or
/// whose time ran out (called every heartbeat).
pub(crate) fn expire_pending(cluster: &ClusterNode, router: &Router) {
    let now = Instant::now();
    let overdue: Vec<Pending> = {
        let mut pending = cluster.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<(String, String)> = pending
            .iter()
            .filter(|(_, p)| p.deadline <= now || !cluster.is_alive(&p.node))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| pending.remove(k)).collect()
    };
    for p in overdue {
        let why = if cluster.is_alive(&p.node) {
            format!("no response from {} in time", p.to)
        } else {
            format!("the node holding {} ({}) is gone", p.to, p.node)
        };
        router.metrics.refused(ResponseCode::Other(504), true);
        let text = error_frame(
            Some(p.id),
            &p.to,
            Some(&p.from),
            ResponseCode::Other(504),
            &why,
        );
        router.deliver(&p.sender, &ByteString::from(text));
    }
}

/// A frame from another node: routed to local sessions only.
pub(crate) fn received(cluster: &ClusterNode, router: &Router, frame: ByteString) {
    let Ok(h) = Header::parse(&frame) else {
        tracing::warn!("dropping a malformed frame from another node");
        return;
    };
    if h.kind == MessageType::Response {
        cluster.answered(h.to.first(), &h.id.to_json());
    }
    let _span = tracing::trace_span!("cluster.received", id = %h.id, to = %h.to.first()).entered();
    router
        .stats
        .from_cluster
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    router.route_from_peer(&h.to, &frame, h.kind == MessageType::Event);
}

/// What the receiver hands the directory: hand-overs and replacements for this node.
pub(crate) type HandOvers = tokio::sync::mpsc::Sender<Control>;

/// The receiver loop: subscribes to this node's channel and the control
/// channel, re-subscribing after Redis comes back; never ends by itself.
pub(crate) async fn receiver(cluster: Arc<ClusterNode>, router: Arc<Router>, handovers: HandOvers) {
    let mine = cluster.channel_of(cluster.id());
    let control = cluster.control_channel();
    let mut delay = Duration::from_millis(20);
    loop {
        let pubsub = async {
            let mut ps = cluster.store().pubsub().await?;
            ps.subscribe(&mine).await.map_err(ClusterError::from)?;
            ps.subscribe(&control).await.map_err(ClusterError::from)?;
            Ok::<_, ClusterError>(ps)
        }
        .await;
        let mut ps = match pubsub {
            Ok(ps) => ps,
            Err(e) => {
                tracing::debug!(error = %e, "cluster channels unreachable, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(cluster.heartbeat);
                continue;
            }
        };
        delay = Duration::from_millis(20);
        tracing::info!(node = cluster.id(), "listening on the cluster channels");
        // what was cached may be stale after a gap
        cluster.invalidate_local(Vec::new());
        let mut stream = ps.on_message();
        while let Some(msg) = stream.next().await {
            if msg.get_channel_name() == mine {
                match std::str::from_utf8(msg.get_payload_bytes()) {
                    Ok(t) if t.starts_with(super::node::CONTROL_MARK) => {
                        match serde_json::from_str::<Control>(&t[1..]) {
                            Ok(c) => {
                                if handovers.try_send(c).is_err() {
                                    tracing::warn!(
                                        "too many control messages at once, one dropped"
                                    );
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring a malformed control message")
                            }
                        }
                    }
                    Ok(t) => received(&cluster, &router, ByteString::from(t)),
                    Err(_) => tracing::warn!("dropping a non-UTF-8 frame from another node"),
                }
                continue;
            }
            match serde_json::from_slice::<Control>(msg.get_payload_bytes()) {
                Ok(Control::Invalidate { addresses }) => cluster.invalidate_local(addresses),
                Ok(c @ (Control::HandOver { .. } | Control::Replace { .. })) => {
                    let mine = match &c {
                        Control::HandOver { node, .. } | Control::Replace { node, .. } => {
                            node == cluster.id()
                        }
                        Control::Invalidate { .. } | Control::Audience { .. } => false,
                    };
                    if mine && handovers.try_send(c).is_err() {
                        tracing::warn!(
                            "too many hand-overs at once, one is left to the grace period"
                        );
                    }
                }
                // audiences travel on the node channels, in order with frames
                Ok(Control::Audience { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed control message"),
            }
        }
        tracing::warn!(
            node = cluster.id(),
            "lost the cluster channels, reconnecting"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn lookups_walk_up_runtime_and_hyperty_urls() {
        let cfg = crate::cluster::ClusterSection {
            redis: Some("redis://127.0.0.1:6379".into()),
            prefix: "p".into(),
            ..Default::default()
        };
        let c = ClusterNode::open(&cfg).unwrap().unwrap();
        let (owners, subs) = lookups(&c, "runtime://d.org/abc/sm");
        assert_eq!(
            owners,
            [
                "p:owner:runtime://d.org/abc/sm",
                "p:rt:runtime://d.org/abc/sm",
                "p:rt:runtime://d.org/abc"
            ]
        );
        assert_eq!(subs, "p:subs:runtime://d.org/abc/sm");
        let (owners, _) = lookups(&c, "hyperty://d.org/h1/news/x");
        assert_eq!(
            owners,
            [
                "p:owner:hyperty://d.org/h1/news/x",
                "p:owner:hyperty://d.org/h1/news",
                "p:owner:hyperty://d.org/h1"
            ]
        );
        let (owners, _) = lookups(&c, "comm://d.org/o/changes");
        assert_eq!(owners, ["p:owner:comm://d.org/o/changes"]);
        assert_eq!(node_of("n1 key runtime://d.org/a -"), "n1");
        assert_eq!(node_of("n1"), "n1");
    }
}
