//! Helpers for the event tests: runtimes on a manual clock, entities with inboxes,
//! a recording (optionally tampering) stub pair, raw injection, and a hub that
//! fans messages out per runtime the way a messaging node does.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperty::prelude::*;
use hyperty::StubHandle;
use serde_json::Value;

pub use hyperty_actors::testkit::TIMEOUT;

/// The shared test helpers (nodes, hyperties), for the event tests that need them.
#[path = "../common/mod.rs"]
pub mod common;

/// The manual clock's start: 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000_000;

/// How long to wait before concluding something did not happen.
pub const QUIET: Duration = Duration::from_millis(100);

pub fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

pub fn config(domain: &str, clock: &ManualClock) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(domain);
    cfg.runtime_id = Some("rt".into());
    cfg.clock = Arc::new(clock.clone());
    cfg.events.tick_interval = None;
    cfg
}

/// A runtime of `domain` (`hyperty-runtime://<domain>/rt`) on `clock`, no timer.
pub fn start(domain: &str, clock: &ManualClock) -> RuntimeHandle {
    Runtime::start(config(domain, clock)).unwrap()
}

/// A registered entity that owns itself, with a listener hearing everything.
pub struct Entity {
    pub addr: Address,
    pub ep: EventEndpoint,
    pub inbox: InboxReceiver,
    pub listener: EventListenerId,
}

pub async fn entity(rt: &RuntimeHandle, url: &str) -> Entity {
    entity_owned_by(rt, url, url).await
}

/// An entity owned by `owner`, with a listener of that owner on this entity only.
pub async fn entity_owned_by(rt: &RuntimeHandle, url: &str, owner: &str) -> Entity {
    entity_at(rt, addr(url), addr(owner)).await
}

/// A hyperty of `rt`'s domain (its address allocated by the node `rt` is attached
/// to) registered as an entity that owns itself, with a listener hearing everything.
pub async fn hyperty_entity(rt: &RuntimeHandle) -> Entity {
    let domain = rt.url().domain().unwrap_or_default().to_owned();
    let a = rt
        .spawn_hyperty(common::worker(&domain))
        .await
        .unwrap()
        .into_address();
    entity_at(rt, a.clone(), a).await
}

/// One federated node per domain (see `start_domains`) and a runtime of each
/// domain on `clock` attached to its node, in the same order.
pub async fn federated(
    domains: &[&str],
    clock: &ManualClock,
) -> (Vec<hyperty::node::NodeHandle>, Vec<RuntimeHandle>) {
    common::federated(
        domains.iter().map(|d| config(d, clock)).collect(),
        |_, _| {},
    )
    .await
}

/// Stops every node of `nodes`.
pub async fn stop_all(nodes: &[hyperty::node::NodeHandle]) {
    common::stop_all(nodes).await;
}

async fn entity_at(rt: &RuntimeHandle, a: Address, owner: Address) -> Entity {
    let ep = rt.events().endpoint(owner);
    ep.register_entity(a.clone()).await.unwrap();
    let (rec, inbox) = EventInbox::start();
    let listener = ep
        .add_listener(ListenerFilter::any().destination(a.clone()), rec)
        .await
        .unwrap();
    Entity {
        addr: a,
        ep,
        inbox,
        listener,
    }
}

/// Rewrites a message on the wire (to simulate corruption).
pub type Tamper = Arc<dyn Fn(&mut Message) + Send + Sync>;

/// One end of a stub pair: records what it carries, optionally tampers with it,
/// serialises and parses it as a wire would, and injects it into the peer.
pub struct RecordingStub {
    pub ctx: StubContext,
    pub peer: Arc<Mutex<Option<StubContext>>>,
    pub log: Arc<Mutex<Vec<Message>>>,
    pub tamper: Arc<Mutex<Option<Tamper>>>,
}

impl Actor for RecordingStub {
    type Context = Context<Self>;
}

impl Handler<Deliver> for RecordingStub {
    type Result = ();
    fn handle(&mut self, Deliver(mut m): Deliver, _: &mut Context<Self>) {
        if let Some(t) = self.tamper.lock().unwrap().as_ref() {
            t(&mut m);
        }
        self.log.lock().unwrap().push(m.clone());
        let back = Message::parse(&m.to_json()).expect("round trip");
        if let Some(peer) = self.peer.lock().unwrap().as_ref() {
            peer.inject(back);
        }
    }
}

impl Handler<Connect> for RecordingStub {
    type Result = Result<(), StubError>;
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        self.ctx.report(StubStatus::Live, None);
        Ok(())
    }
}

impl Handler<Disconnect> for RecordingStub {
    type Result = ();
    fn handle(&mut self, _: Disconnect, _: &mut Context<Self>) {
        self.ctx.report(StubStatus::Disconnected, Some("requested"));
    }
}

/// One direction of a link.
pub struct Side {
    pub stub: StubHandle<RecordingStub>,
    pub log: Arc<Mutex<Vec<Message>>>,
    pub tamper: Arc<Mutex<Option<Tamper>>>,
}

impl Side {
    /// The event messages carried so far.
    pub fn events(&self) -> Vec<Message> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.kind == MessageType::Event)
            .cloned()
            .collect()
    }

    /// The carried events whose value has this event type.
    pub fn events_of_type(&self, t: &str) -> Vec<Message> {
        self.events()
            .into_iter()
            .filter(|m| m.body.value.as_ref().and_then(|v| v.get("type")) == Some(&Value::from(t)))
            .collect()
    }

    pub fn set_tamper(&self, t: Option<Tamper>) {
        *self.tamper.lock().unwrap() = t;
    }
}

/// Links `a` and `b` with recording stubs: `a` reaches `b_domain` through the
/// first side, `b` reaches `a_domain` through the second.
pub async fn link(
    a: &RuntimeHandle,
    a_domain: Option<&str>,
    b: &RuntimeHandle,
    b_domain: Option<&str>,
) -> (Side, Side) {
    let a_slot = Arc::new(Mutex::new(None));
    let b_slot = Arc::new(Mutex::new(None));
    let (log_ab, log_ba) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (t_ab, t_ba) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
    let (peer, mine, log, tamper) = (b_slot.clone(), a_slot.clone(), log_ab.clone(), t_ab.clone());
    let sa = a
        .add_stub(b_domain, move |ctx| {
            *mine.lock().unwrap() = Some(ctx.clone());
            RecordingStub {
                ctx,
                peer,
                log,
                tamper,
            }
        })
        .await
        .unwrap();
    let (peer, mine, log, tamper) = (a_slot.clone(), b_slot.clone(), log_ba.clone(), t_ba.clone());
    let sb = b
        .add_stub(a_domain, move |ctx| {
            *mine.lock().unwrap() = Some(ctx.clone());
            RecordingStub {
                ctx,
                peer,
                log,
                tamper,
            }
        })
        .await
        .unwrap();
    sa.connect().await.unwrap();
    sb.connect().await.unwrap();
    (
        Side {
            stub: sa,
            log: log_ab,
            tamper: t_ab,
        },
        Side {
            stub: sb,
            log: log_ba,
            tamper: t_ba,
        },
    )
}

/// Hands `value` to `rt` as an `event` message that came through `stub`, addressed
/// to `to`, from the dispatcher of `from_runtime`.
pub fn inject_event(
    rt: &RuntimeHandle,
    stub: &Address,
    from_runtime: &str,
    to: &[&str],
    value: Value,
) {
    let to = match to {
        [one] => To::One(addr(one)),
        many => To::many(many.iter().map(|s| addr(s)).collect()).unwrap(),
    };
    let msg = Message::new(
        MessageType::Event,
        addr(&format!("{from_runtime}/events")),
        to,
    )
    .with_id(rt.bus().next_id())
    .with_value(value);
    rt.bus().inject(msg, stub);
}

/// Polls the dispatcher's counters until `cond` holds or the deadline passes.
pub async fn stats_until(rt: &RuntimeHandle, cond: impl Fn(&EventStats) -> bool) -> EventStats {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let s = rt.events().stats().await;
        if cond(&s) || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Collects reports until `n` of them match `pred` (or the deadline passes).
pub async fn reports(
    rx: &mut ReportReceiver,
    n: usize,
    pred: impl Fn(&ReportKind) -> bool,
) -> Vec<ReportKind> {
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv_matching(TIMEOUT, &pred).await {
            Some(r) => out.push(r.kind),
            None => break,
        }
    }
    out
}

pub fn is_delivery(k: &ReportKind) -> bool {
    matches!(k, ReportKind::Delivery { .. })
}

pub fn is_error(k: &ReportKind) -> bool {
    matches!(k, ReportKind::Error { .. })
}

/// The first delivery or error report.
pub async fn first_report(rx: &mut ReportReceiver) -> ReportKind {
    rx.recv_matching(TIMEOUT, |k| is_delivery(k) || is_error(k))
        .await
        .expect("a delivery report")
        .kind
}

/// The error code of an `onError` report.
pub fn error_code(k: &ReportKind) -> Option<DeliveryErrorCode> {
    match k {
        ReportKind::Error { error, .. } => Some(error.code),
        _ => None,
    }
}

// ---- a node-like hub ------------------------------------------------------------

type Serves = Box<dyn Fn(&Address) -> bool + Send>;

struct Member {
    ctx: StubContext,
    serves: Serves,
}

/// Connects several runtimes through their default stubs: a message from one is
/// delivered to every *other* runtime serving some of its recipients, with `to`
/// narrowed to those (what the messaging node does per destination runtime).
#[derive(Default)]
pub struct Hub {
    members: Mutex<Vec<Member>>,
}

pub struct HubStub {
    hub: Arc<Hub>,
    me: usize,
    ctx: StubContext,
}

impl Actor for HubStub {
    type Context = Context<Self>;
}

impl Handler<Deliver> for HubStub {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let members = self.hub.members.lock().unwrap();
        for (i, member) in members.iter().enumerate() {
            if i == self.me {
                continue;
            }
            let to: Vec<Address> =
                m.to.iter()
                    .filter(|a| (member.serves)(a))
                    .cloned()
                    .collect();
            let Some(to) = To::many(to) else { continue };
            let mut copy = m.clone();
            copy.to = match to {
                To::Many(v) if v.len() == 1 => To::One(v[0].clone()),
                other => other,
            };
            let back = Message::parse(&copy.to_json()).expect("round trip");
            member.ctx.inject(back);
        }
    }
}

impl Handler<Connect> for HubStub {
    type Result = Result<(), StubError>;
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        self.ctx.report(StubStatus::Live, None);
        Ok(())
    }
}

impl Handler<Disconnect> for HubStub {
    type Result = ();
    fn handle(&mut self, _: Disconnect, _: &mut Context<Self>) {
        self.ctx.report(StubStatus::Disconnected, None);
    }
}

impl Hub {
    /// Attaches `rt` (default stub) serving the addresses `serves` accepts.
    pub async fn join(
        self: &Arc<Self>,
        rt: &RuntimeHandle,
        serves: impl Fn(&Address) -> bool + Send + 'static,
    ) {
        let hub = self.clone();
        let stub = rt
            .add_stub(None, move |ctx| {
                let mut members = hub.members.lock().unwrap();
                members.push(Member {
                    ctx: ctx.clone(),
                    serves: Box::new(serves),
                });
                HubStub {
                    hub: hub.clone(),
                    me: members.len() - 1,
                    ctx,
                }
            })
            .await
            .unwrap();
        stub.connect().await.unwrap();
    }
}
