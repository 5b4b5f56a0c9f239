//! Order and gap recovery: observers behind links that drop and reorder changes
//! at random, and behind a socket the node cuts mid-stream, end up equal to the
//! reporter — in every run — and never apply a change out of order.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use hyperty_actors::syncher::manager::GetSyncStats;
use serde_json::json;

/// A deterministic pseudo-random sequence (xorshift64*), one per run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How the reporter's link mangles the changes it carries.
#[derive(Clone, Copy)]
struct Loss {
    drop: f64,
    reorder: f64,
    /// Changes (by count) in this range are all dropped.
    blackout: (u64, u64),
}

/// A protocol stub that hands what it is delivered to its peers' runtimes as if
/// it had crossed a wire: to the peer whose domain `to` names, else to all of
/// them (the object channels). With `loss`, changes published to `/changes` and
/// `/children/` are dropped and reordered at random.
struct LossyStub {
    peers: Arc<Mutex<Vec<StubContext>>>,
    loss: Option<Loss>,
    rng: Rng,
    held: Option<Message>,
    changes: u64,
}

impl LossyStub {
    fn hand_over(&self, m: Message) {
        let back = Message::parse(&m.to_json()).expect("round trip");
        let peers = self.peers.lock().unwrap();
        let domain = back.to.first().domain().map(str::to_owned);
        let matching: Vec<&StubContext> = peers
            .iter()
            .filter(|p| p.bus().runtime_url().domain().map(str::to_owned) == domain)
            .collect();
        let targets = match matching.is_empty() {
            true => peers.iter().collect(),
            false => matching,
        };
        for p in targets {
            p.inject(back.clone());
        }
    }
}

impl Actor for LossyStub {
    type Context = Context<Self>;
}

impl Handler<Deliver> for LossyStub {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let to = m.to.first().as_str();
        let change = matches!(m.kind, MessageType::Update | MessageType::Create)
            && (to.ends_with("/changes") || to.ends_with("/children/"));
        if let (Some(loss), true) = (self.loss, change) {
            self.changes += 1;
            if (loss.blackout.0..loss.blackout.1).contains(&self.changes) {
                return;
            }
            let r = self.rng.unit();
            if r < loss.drop {
                return;
            }
            if r < loss.drop + loss.reorder && self.held.is_none() {
                self.held = Some(m);
                return;
            }
            self.hand_over(m);
            if let Some(h) = self.held.take() {
                self.hand_over(h);
            }
            return;
        }
        self.hand_over(m);
    }
}

impl Handler<Connect> for LossyStub {
    type Result = Result<(), StubError>;
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

impl Handler<Disconnect> for LossyStub {
    type Result = ();
    fn handle(&mut self, _: Disconnect, _: &mut Context<Self>) {}
}

fn config(domain: &str, history: usize) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(domain);
    c.syncher.history = history;
    c.syncher.check_interval = Duration::from_millis(50);
    c.syncher.fetch_timeout = Duration::from_millis(500);
    c
}

/// Reads every queued event of `obs`, checking that changes come in order.
fn drain_in_order(obs: &mut Observer, last: &mut u64) {
    while let Some(ev) = obs.try_next() {
        match ev {
            SyncEvent::Changed(c) => {
                assert!(c.version > *last, "change {} after {}", c.version, last);
                *last = c.version;
            }
            SyncEvent::Resync { version } => {
                assert!(version >= *last);
                *last = version;
            }
            _ => {}
        }
    }
}

async fn lossy_run(
    seed: u64,
    loss: Loss,
    history: usize,
) -> hyperty_actors::syncher::manager::SyncStats {
    let a = Runtime::start(config("a.test", history)).unwrap();
    let b = Runtime::start(config("b.test", history)).unwrap();
    let c = Runtime::start(config("c.test", history)).unwrap();
    let a_peers = Arc::new(Mutex::new(Vec::new()));
    let a_side = Arc::new(Mutex::new(Vec::new()));
    let (pa, sa) = (a_peers.clone(), a_side.clone());
    let stub = a
        .add_stub(None, move |ctx| {
            sa.lock().unwrap().push(ctx);
            LossyStub {
                peers: pa,
                loss: Some(loss),
                rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
                held: None,
                changes: 0,
            }
        })
        .await
        .unwrap();
    stub.connect().await.unwrap();
    for rt in [&b, &c] {
        let (peers, pa) = (a_side.clone(), a_peers.clone());
        let s = rt
            .add_stub(None, move |ctx| {
                pa.lock().unwrap().push(ctx);
                LossyStub {
                    peers,
                    loss: None,
                    rng: Rng(1),
                    held: None,
                    changes: 0,
                }
            })
            .await
            .unwrap();
        s.connect().await.unwrap();
    }

    let (alice, _) = inbox_hyperty(&a, "a.test", None).await;
    let (bob, _) = inbox_hyperty(&b, "b.test", None).await;
    let (bea, _) = inbox_hyperty(&b, "b.test", None).await;
    let (carl, _) = inbox_hyperty(&c, "c.test", None).await;
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("feed", "comm").with_data(json!({"n": 0, "log": []})))
        .await
        .unwrap();
    let url = reporter.url().clone();
    let mut observers = [
        bob.syncher().subscribe(&url).await.unwrap(),
        bea.syncher().subscribe(&url).await.unwrap(),
        carl.syncher().subscribe(&url).await.unwrap(),
    ];
    let mut last = vec![0u64; observers.len()];
    for i in 0..300u64 {
        match i % 3 {
            0 => reporter.set("n", i).await.unwrap(),
            1 => reporter.push("log", i).await.unwrap(),
            _ => {
                let id = reporter.add_child(json!({"i": i})).await.unwrap();
                reporter.update_child(&id, "i", i + 1).await.unwrap()
            }
        };
        for (o, l) in observers.iter_mut().zip(last.iter_mut()) {
            drain_in_order(o, l);
        }
    }
    let want = reporter.snapshot();
    for (o, l) in observers.iter_mut().zip(last.iter_mut()) {
        let converged = eventually(Duration::from_secs(20), || {
            drain_in_order(o, l);
            let same = o.snapshot() == want;
            async move { same }
        })
        .await;
        assert!(
            converged,
            "seed {seed}: observer at {} of {}",
            o.version(),
            want.version
        );
        drain_in_order(o, l);
    }
    let mut stats = b.syncher().send(GetSyncStats).await.unwrap();
    let sc = c.syncher().send(GetSyncStats).await.unwrap();
    stats.fetches += sc.fetches;
    stats.snapshots += sc.snapshots;
    for rt in [&a, &b, &c] {
        rt.shutdown().await;
    }
    stats
}

#[actix::test]
async fn observers_behind_a_lossy_reordering_link_converge_in_every_run() {
    for seed in 1..=5 {
        let loss = Loss {
            drop: 0.15,
            reorder: 0.15,
            blackout: (0, 0),
        };
        let stats = lossy_run(seed, loss, 256).await;
        assert!(stats.fetches > 0, "seed {seed}: gaps were fetched");
    }
}

#[actix::test]
async fn a_long_outage_is_recovered_from_a_snapshot() {
    let loss = Loss {
        drop: 0.05,
        reorder: 0.05,
        blackout: (100, 200),
    };
    let stats = lossy_run(7, loss, 16).await;
    assert!(
        stats.snapshots > 0,
        "the history window was too short: {stats:?}"
    );
}

#[actix::test]
async fn a_socket_cut_mid_stream_leaves_no_gap() {
    // a tiny grace buffer: frames for a cut session are lost, not kept
    let node = start_node("cut.test", |c| c.session.grace_buffer = 2);
    let mut cfg = config("cut.test", 1024);
    cfg.runtime_id = Some("reporter".into());
    let a = Runtime::start(cfg).unwrap();
    let b = Runtime::start(config("cut.test", 1024)).unwrap();
    a.attach_node(BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
    b.attach_node(BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
    let (alice, _) = inbox_hyperty(&a, "cut.test", None).await;
    let (bob, _) = inbox_hyperty(&b, "cut.test", None).await;
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("ctx", "context").with_data(json!({"values": []})))
        .await
        .unwrap();
    let mut obs = bob.syncher().subscribe(reporter.url()).await.unwrap();
    let router = node.state().router().clone();
    let mut last = 0;
    for i in 0..400u64 {
        reporter.push("values", i).await.unwrap();
        if i % 100 == 50 {
            let key = router.session_of(b.url().as_str()).expect("b's session");
            router.kick(&key, "cut mid-stream");
        }
        drain_in_order(&mut obs, &mut last);
    }
    let want = reporter.snapshot();
    assert!(
        eventually(Duration::from_secs(20), || {
            drain_in_order(&mut obs, &mut last);
            let same = obs.snapshot() == want;
            async move { same }
        })
        .await,
        "observer at {} of {}",
        obs.version(),
        want.version
    );
    assert_eq!(obs.data()["values"].as_array().map(Vec::len), Some(400));
    assert!(router.snapshot().dropped > 0, "the cut lost frames");
    a.shutdown().await;
    b.shutdown().await;
    node.stop().await;
}
