//! Policy decision time and the cost of the PEP on the bus, in one run.
//!
//! * `decide/<n>`: [`CompiledPolicies::decide`] over `n` = 1, 100 and 10 000 rules
//!   of a mix where most rules do not match a given message: 50 % exact `to`, 30 %
//!   `to` prefixes (`hyperty://p<i>.org/*`), 14 % exact `from`, 5 % message types,
//!   1 % scanned sender-domain suffixes (`*.x<i>.org`). `hit` is a message one
//!   exact rule denies, `prefix` one a prefix rule denies, `miss` one no rule matches.
//! * `enforce/100`: what the PEP does to one message with 100 rules (decide,
//!   obligations, `body.auth`).
//! * `bus_one_way_{cross,same}_thread`: a hyperty sends batches of 1000 `update`s to
//!   a hyperty in another sandbox (thread) or in its own, through a bus without
//!   policy and through a bus whose PEP holds 100 rules of the same mix (plus a
//!   permit for the traffic, so every message is decided and stamped `auth = true`).
//!
//! Run: `cargo bench --bench policy`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hyperty::prelude::{
    Actor, Address, Context, Deliver, Direction, Handler, HypertyContext, HypertySpec, Message,
    MessageType, Pdp, PolicyConfig, PolicyRequest, PolicySet, Runtime, RuntimeConfig,
    RuntimeHandle,
};
use hyperty_actors::policy::{CompileOptions, CompiledPolicies, DecisionEffect};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// Messages per batch: below every mailbox capacity, so nothing is refused.
const BATCH: u64 = 1000;

fn rules(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let target = match i % 100 {
                0..=49 => json!({"to": [format!("hyperty://d{i}.org/h{i}")]}),
                50..=79 => json!({"to": [format!("hyperty://p{i}.org/*")]}),
                80..=93 => json!({"from": [format!("hyperty://s{i}.org/x")]}),
                94..=98 => json!({"types": [format!("custom-{i}")]}),
                _ => json!({"domains": [format!("*.x{i}.org")]}),
            };
            json!({"id": format!("r{i}"), "effect": "deny", "target": target})
        })
        .collect()
}

fn policy(n: usize, extra: Vec<Value>) -> PolicySet {
    let mut r = rules(n);
    r.extend(extra);
    PolicySet::from_value(json!({"id": format!("mix-{n}"), "rules": r})).expect("valid mix")
}

fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    for n in [1usize, 100, 10_000] {
        let p = CompiledPolicies::compile(&[policy(n, vec![])], &CompileOptions::default())
            .expect("compiles");
        let hit_to = format!("hyperty://d{0}.org/h{0}", (n / 2) / 100 * 100);
        let prefix_to = format!("hyperty://p{}.org/any", (n / 2) / 100 * 100 + 50);
        let hit = PolicyRequest::new("create", "hyperty://a.org/1", &hit_to);
        let prefix = PolicyRequest::new("create", "hyperty://a.org/1", &prefix_to);
        let miss = PolicyRequest::new("update", "hyperty://a.org/1", "hyperty://b.org/2");
        assert_eq!(p.decide(&hit).effect, DecisionEffect::Deny);
        assert_eq!(p.decide(&miss).effect, DecisionEffect::NotApplicable);
        if n >= 100 {
            assert_eq!(p.decide(&prefix).effect, DecisionEffect::Deny);
            g.bench_with_input(BenchmarkId::new("prefix", n), &prefix, |b, r| {
                b.iter(|| p.decide(std::hint::black_box(r)))
            });
        }
        g.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, r| {
            b.iter(|| p.decide(std::hint::black_box(r)))
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, r| {
            b.iter(|| p.decide(std::hint::black_box(r)))
        });
    }
    g.finish();

    // What the PEP adds to one message: decide plus obligations and `body.auth`.
    let mut g = c.benchmark_group("enforce");
    let sys = actix::System::new();
    let pdp = sys.block_on(async {
        let pdp = Pdp::new(PolicyConfig::default()).expect("pdp").start();
        let permit = json!({"id": "traffic", "effect": "permit", "target": {"types": ["update"]}});
        pdp.add_policies(vec![policy(100, vec![permit])])
            .await
            .expect("policies");
        pdp
    });
    let from: Address = "hyperty://a.org/1".parse().expect("address");
    let to: Address = "hyperty://b.org/2".parse().expect("address");
    let mut msg = Message::new(MessageType::Update, from, to);
    g.bench_function("100", |b| {
        b.iter(|| {
            pdp.policies()
                .enforce(std::hint::black_box(&mut msg), Some(Direction::Local))
        })
    });
    g.finish();
}

// ---- bus with and without the PEP ---------------------------------------------

type Done = Arc<Mutex<Option<oneshot::Sender<()>>>>;

fn signal(done: &Done) {
    if let Some(tx) = done.lock().ok().and_then(|mut d| d.take()) {
        let _ = tx.send(());
    }
}

struct Sink {
    seen: u64,
    target: Arc<AtomicU64>,
    done: Done,
}
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Deliver> for Sink {
    type Result = ();
    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {
        self.seen += 1;
        if self.seen == self.target.load(Ordering::Relaxed) {
            self.seen = 0;
            signal(&self.done);
        }
    }
}

struct Driver {
    ctx: HypertyContext,
}
impl Actor for Driver {
    type Context = Context<Self>;
}
impl Handler<Deliver> for Driver {
    type Result = ();
    fn handle(&mut self, Deliver(cmd): Deliver, _: &mut Context<Self>) {
        let v = cmd.body.value.unwrap_or_default();
        let n = v["n"].as_u64().unwrap_or(0);
        let Some(to) = v["to"].as_str().and_then(|t| t.parse::<Address>().ok()) else {
            return;
        };
        let m = Message::new(MessageType::Update, self.ctx.url().address().clone(), to)
            .with_value(json!({"text": "0123456789012345678901234567890123456789012345678901234567890123456789"}));
        for _ in 0..n {
            self.ctx.bus().send(m.clone());
        }
    }
}

struct Bench {
    rt: RuntimeHandle,
    driver: Address,
    sink: Address,
    done: Done,
}

/// A runtime with a sink and a driver; `same_thread`: both in one sandbox.
async fn setup(domain: &str, policy: Option<PolicySet>, same_thread: bool) -> Bench {
    let mut cfg = RuntimeConfig::new(domain);
    cfg.policy = policy.as_ref().map(|_| PolicyConfig::default());
    let rt = Runtime::start(cfg).expect("runtime");
    if let (Some(pdp), Some(set)) = (rt.pdp(), policy) {
        pdp.installed().await.expect("PEP installed");
        pdp.add_policies(vec![set]).await.expect("policies");
    }
    let done: Done = Default::default();
    let target = Arc::new(AtomicU64::new(BATCH));
    let d = done.clone();
    let sink = rt
        .spawn_hyperty(HypertySpec::new(
            "sink",
            if same_thread {
                "sender.org"
            } else {
                "receiver.org"
            },
            move |_| Sink {
                seen: 0,
                target: target.clone(),
                done: d.clone(),
            },
        ))
        .await
        .expect("sink");
    let driver = rt
        .spawn_hyperty(HypertySpec::new("driver", "sender.org", |ctx| Driver {
            ctx,
        }))
        .await
        .expect("driver");
    Bench {
        rt,
        driver: driver.into_address(),
        sink: sink.into_address(),
        done,
    }
}

fn bus(c: &mut Criterion) {
    let sys = actix::System::new();
    let benches = sys.block_on(async {
        let permit = || {
            policy(
                100,
                vec![json!({"id": "traffic", "effect": "permit", "target": {"types": ["update", "execute"]}})],
            )
        };
        [
            ("cross_thread", "no_pep", setup("a.org", None, false).await),
            ("cross_thread", "pep_100_rules", setup("b.org", Some(permit()), false).await),
            ("same_thread", "no_pep", setup("c.org", None, true).await),
            ("same_thread", "pep_100_rules", setup("d.org", Some(permit()), true).await),
        ]
    });
    let run = |b: &Bench| -> Duration {
        sys.block_on(async {
            let (tx, rx) = oneshot::channel();
            if let Ok(mut d) = b.done.lock() {
                *d = Some(tx);
            }
            let start = Instant::now();
            b.rt.bus().send(
                Message::new(
                    MessageType::Execute,
                    b.rt.url().component("bench"),
                    b.driver.clone(),
                )
                .with_value(json!({"n": BATCH, "to": b.sink.as_str()})),
            );
            rx.await.expect("batch delivered");
            start.elapsed()
        })
    };
    for group in ["cross_thread", "same_thread"] {
        let mut g = c.benchmark_group(format!("bus_one_way_{group}"));
        g.throughput(Throughput::Elements(BATCH));
        for (_, name, b) in benches.iter().filter(|(g, _, _)| *g == group) {
            g.bench_function(*name, |bench| {
                bench.iter_custom(|iters| (0..iters).map(|_| run(b)).sum())
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = policy_benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = decide, bus
}
criterion_main!(policy_benches);
