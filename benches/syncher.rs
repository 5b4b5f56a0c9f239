//! The Syncher through a real messaging node, each against the node's raw
//! service in the same run (same node, same frame size):
//!
//! * **fan-out**: one reporter update reaching `--observers` (1000) observers,
//!   hosted by `--runtimes` (20) observer runtimes, i.e. 20 node sessions of 50
//!   observers each; the time until the last observer's replica has the new
//!   version, one update at a time (`--updates`). Baselines, both raw `/sm`
//!   fan-outs (loadgen's fan-out mode) of a frame of the same size: to as many
//!   subscribed sessions as there are observers (1000: the same number of
//!   recipients), and to as many as there are observer runtimes (20: the same
//!   number of node sessions).
//! * **throughput**: updates per second from one reporter to one observer in
//!   another runtime (`--messages`, 64 requests in flight), until the observer's
//!   replica has the last version. Baseline: the node's plain relay of as many
//!   frames of the same size between two raw sessions (loadgen's relay mode,
//!   window 64).
//!
//! Run: `cargo bench --bench syncher` (add `-- --quick` for a short run; add
//! `-- --json FILE` to also write the results as JSON, which
//! `scripts/plot_benchmarks.py` plots).

#[path = "loadgen/mod.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod loadgen;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use serde_json::{json, Value};

const D: &str = "bench.test";
/// The payload of every update (and the padding of the baseline frames).
const PAYLOAD: usize = 100;

struct Quiet;

impl Actor for Quiet {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Quiet {
    type Result = ();
    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
}

async fn hyperty(rt: &RuntimeHandle) -> HypertyContext {
    let slot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    rt.spawn_hyperty(HypertySpec::new("bench", D, move |ctx| {
        *s.lock().unwrap() = Some(ctx);
        Quiet
    }))
    .await
    .expect("hyperty");
    let ctx = slot.lock().unwrap().take().expect("started");
    ctx
}

async fn runtime(url: &str) -> RuntimeHandle {
    let mut c = RuntimeConfig::new(D);
    c.syncher.check_interval = Duration::from_secs(60);
    let rt = Runtime::start(c).expect("runtime");
    rt.attach_node(BridgeConfig::new(url))
        .await
        .expect("attached");
    rt
}

/// The value after `name` on the command line.
fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: u64) -> u64 {
    arg_text(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n - 1) as f64 * p).round() as usize],
    }
}

/// The bytes of the update frame the reporter's runtime sends for one `set`.
fn update_frame_bytes(obj: &Address, source: &Address) -> usize {
    use hyperty_actors::syncher::object::{Change, Op};
    use hyperty_actors::syncher::path::AttrPath;
    let c = Change::data(
        1000,
        source.clone(),
        1_800_000_000_000,
        Op::Set {
            attribute: AttrPath::parse("v").expect("path"),
            value: json!("x".repeat(PAYLOAD)),
        },
    );
    let body = Body::from_map(c.to_body(obj)).expect("body");
    let to: Address = format!("{obj}/changes").parse().expect("address");
    Message::new(MessageType::Update, obj.clone(), to)
        .with_id(1000)
        .with_body(body)
        .to_json()
        .len()
}

/// `Params.size` such that loadgen's frames have `frame` bytes (its envelope is
/// measured with a first, tiny run).
async fn baseline_size(url: &str, frame: usize) -> usize {
    let p = loadgen::Params {
        domain: D.into(),
        subscribers: 1,
        updates: 1,
        size: PAYLOAD,
        ..loadgen::Params::default()
    };
    let r = loadgen::run_fanout(url, &p).await.expect("calibration run");
    (PAYLOAD + frame).saturating_sub(r.frame_bytes).max(1)
}

async fn fanout(url: &str, observers: usize, runtimes: usize, updates: u64) -> (Vec<f64>, usize) {
    let reporter_rt = runtime(url).await;
    let alice = hyperty(&reporter_rt).await;
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("bench", "comm").with_data(json!({"v": ""})))
        .await
        .expect("create");
    let mut rts = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..runtimes {
        rts.push(runtime(url).await);
    }
    for i in 0..observers {
        let ctx = hyperty(&rts[i % runtimes]).await;
        handles.push(
            ctx.syncher()
                .subscribe(reporter.url())
                .await
                .expect("subscribe"),
        );
    }
    let frame = update_frame_bytes(reporter.url(), alice.url().address());
    let payload = Value::String("x".repeat(PAYLOAD));
    let mut samples = Vec::new();
    for _ in 0..updates {
        let t0 = Instant::now();
        let v = reporter.set("v", &payload).await.expect("set");
        while handles.iter().any(|h| h.version() < v) {
            tokio::task::yield_now().await;
        }
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    drop(handles);
    for rt in rts.iter().chain(std::iter::once(&reporter_rt)) {
        rt.shutdown().await;
    }
    (samples, frame)
}

async fn throughput(url: &str, messages: u64) -> f64 {
    let (a, b) = (runtime(url).await, runtime(url).await);
    let (alice, bob) = (hyperty(&a).await, hyperty(&b).await);
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("bench", "comm").with_data(json!({"v": ""})))
        .await
        .expect("create");
    let obs = bob
        .syncher()
        .subscribe(reporter.url())
        .await
        .expect("subscribe");
    let payload = Value::String("x".repeat(PAYLOAD));
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let n = (messages - sent).min(64);
        let batch = (0..n).map(|_| reporter.set("v", &payload));
        for r in join_all(batch).await {
            r.expect("set");
        }
        sent += n;
    }
    while obs.version() < messages {
        tokio::task::yield_now().await;
    }
    let rate = messages as f64 / t0.elapsed().as_secs_f64();
    drop((reporter, obs));
    a.shutdown().await;
    b.shutdown().await;
    rate
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let observers = arg("--observers", 1000) as usize;
    let runtimes = arg("--runtimes", 20).max(1) as usize;
    let updates = arg("--updates", if quick { 20 } else { 100 });
    let messages = arg("--messages", if quick { 2_000 } else { 20_000 });
    let json_file = arg_text("--json");
    actix::System::new().block_on(async move {
        let mut cfg = hyperty::config::NodeConfig::default();
        cfg.node.domain = D.to_owned();
        cfg.auth.mode = hyperty::config::AuthMode::Optional;
        cfg.identity.data_dir = None;
        cfg.node.data_dir = None;
        // the observers' runtimes, then as many raw sessions, all from 127.0.0.1
        cfg.limits.max_sessions_per_ip = observers + runtimes + 64;
        let node = hyperty::node::start(TcpListener::bind("127.0.0.1:0").expect("bind"), cfg)
            .expect("node");
        let url = node.ws_url();

        let (sync, frame) = fanout(&url, observers, runtimes, updates).await;
        let size = baseline_size(&url, frame).await;
        let raw_fanout = |subscribers: usize| {
            let url = url.clone();
            async move {
                let raw = loadgen::run_fanout(
                    &url,
                    &loadgen::Params {
                        domain: D.into(),
                        subscribers,
                        updates,
                        size,
                        ..loadgen::Params::default()
                    },
                )
                .await
                .expect("raw fan-out");
                raw.verify().expect("raw fan-out complete");
                raw
            }
        };
        let (s50, s99) = (percentile(&sync, 0.5), percentile(&sync, 0.99));
        println!(
            "fan-out: syncher, {observers} observers in {runtimes} runtimes, frame {frame} B: p50 {s50:.0} µs p99 {s99:.0} µs"
        );
        let mut raws = Vec::new();
        for sessions in [observers, runtimes] {
            let raw = raw_fanout(sessions).await;
            println!(
                "fan-out: raw /sm to {sessions} sessions, frame {} B: p50 {:.0} µs p99 {:.0} µs; syncher / raw p50 {:.2}, p99 {:.2}",
                raw.frame_bytes,
                raw.all_received.p50_us,
                raw.all_received.p99_us,
                s50 / raw.all_received.p50_us.max(1.0),
                s99 / raw.all_received.p99_us.max(1.0),
            );
            raws.push(json!({"sessions": sessions, "report": raw}));
        }

        let rate = throughput(&url, messages).await;
        let relay = loadgen::run_relay_load(
            &url,
            &loadgen::Params {
                domain: D.into(),
                pairs: 1,
                messages,
                window: 64,
                size,
                ..loadgen::Params::default()
            },
        )
        .await
        .expect("relay");
        relay.verify().expect("relay complete");
        println!(
            "throughput: syncher {rate:.0} updates/s to one observer; node relay {:.0} msg/s (frame {} B); ratio {:.2}",
            relay.msgs_per_sec,
            relay.frame_bytes,
            rate / relay.msgs_per_sec.max(1.0),
        );
        if let Some(path) = &json_file {
            let doc = json!({
                "bench": "syncher",
                "params": {"observers": observers, "runtimes": runtimes, "updates": updates,
                    "messages": messages, "frame_bytes": frame},
                "fanout": {
                    "syncher": {"p50_us": s50, "p99_us": s99, "samples": sync.len()},
                    "raw": raws,
                },
                "throughput": {"syncher_updates_per_sec": rate, "relay": relay},
            });
            std::fs::write(path, format!("{doc}\n")).expect("write the --json file");
        }
        node.stop().await;
    });
}
