//! Bus throughput and latency against the raw actix baseline, in one run.
//!
//! * `one_way`: a hyperty sends a batch of messages to another hyperty in another
//!   sandbox (thread) through the bus; the baseline actor does the same with
//!   `Addr::do_send` between two arbiters.
//! * `request_response`: a hyperty posts requests one after the other and awaits each
//!   response through the bus; the baseline uses `Addr::send(..).await`.
//!
//! Run: `cargo bench --bench bus`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::{Actor, Addr, Arbiter, Context, Handler};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hyperty::prelude::{
    Address, Deliver, HypertyContext, HypertySpec, Message, MessageType, ResponseCode, Runtime,
    RuntimeConfig,
};
use serde_json::json;
use tokio::sync::oneshot;

/// Messages per batch: below every mailbox capacity, so nothing is refused.
const BATCH: u64 = 1000;

type Done = Arc<Mutex<Option<oneshot::Sender<()>>>>;

fn payload(from: &Address, to: &Address) -> Message {
    Message::new(MessageType::Update, from.clone(), to.clone()).with_value(
        json!({"text": "0123456789012345678901234567890123456789012345678901234567890123456789"}),
    )
}

fn signal(done: &Done) {
    if let Some(tx) = done.lock().unwrap().take() {
        let _ = tx.send(());
    }
}

// ---- bus side -------------------------------------------------------------

struct Sink {
    ctx: HypertyContext,
    seen: u64,
    target: Arc<AtomicU64>,
    done: Done,
}
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Deliver> for Sink {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        if m.kind == MessageType::Read {
            self.ctx
                .reply(&m, ResponseCode::Ok, serde_json::Value::Null);
            return;
        }
        self.seen += 1;
        if self.seen == self.target.load(Ordering::Relaxed) {
            self.seen = 0;
            signal(&self.done);
        }
    }
}

struct Driver {
    ctx: HypertyContext,
    done: Done,
}
impl Actor for Driver {
    type Context = Context<Self>;
}
impl Handler<Deliver> for Driver {
    type Result = ();
    fn handle(&mut self, Deliver(cmd): Deliver, _: &mut Context<Self>) {
        let v = cmd.body.value.unwrap_or_default();
        let n = v["n"].as_u64().unwrap_or(0);
        let to: Address = v["to"].as_str().unwrap().parse().unwrap();
        let me = self.ctx.url().address().clone();
        if v["mode"] == "oneway" {
            let m = payload(&me, &to);
            for _ in 0..n {
                self.ctx.bus().send(m.clone());
            }
        } else {
            let bus = self.ctx.bus().clone();
            let done = self.done.clone();
            let req = Message::new(MessageType::Read, me, to);
            actix::spawn(async move {
                for _ in 0..n {
                    bus.post(req.clone()).await.unwrap();
                }
                signal(&done);
            });
        }
    }
}

// ---- raw actix baseline ---------------------------------------------------

#[derive(actix::Message)]
#[rtype(result = "()")]
struct Raw(#[allow(dead_code)] Message);

#[derive(actix::Message)]
#[rtype(result = "Message")]
struct RawReq(Message);

struct RawSink {
    seen: u64,
    target: Arc<AtomicU64>,
    done: Done,
}
impl Actor for RawSink {
    type Context = Context<Self>;
}
impl Handler<Raw> for RawSink {
    type Result = ();
    fn handle(&mut self, _: Raw, _: &mut Context<Self>) {
        self.seen += 1;
        if self.seen == self.target.load(Ordering::Relaxed) {
            self.seen = 0;
            signal(&self.done);
        }
    }
}
impl Handler<RawReq> for RawSink {
    type Result = actix::MessageResult<RawReq>;
    fn handle(&mut self, r: RawReq, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(r.0.reply(ResponseCode::Ok))
    }
}

#[derive(actix::Message)]
#[rtype(result = "()")]
struct RawRun {
    oneway: bool,
    n: u64,
}

struct RawDriver {
    sink: Addr<RawSink>,
    from: Address,
    to: Address,
    done: Done,
}
impl Actor for RawDriver {
    type Context = Context<Self>;
}
impl Handler<RawRun> for RawDriver {
    type Result = ();
    fn handle(&mut self, r: RawRun, _: &mut Context<Self>) {
        if r.oneway {
            let m = payload(&self.from, &self.to);
            for _ in 0..r.n {
                self.sink.do_send(Raw(m.clone()));
            }
        } else {
            let sink = self.sink.clone();
            let done = self.done.clone();
            let req = Message::new(MessageType::Read, self.from.clone(), self.to.clone());
            actix::spawn(async move {
                for _ in 0..r.n {
                    sink.send(RawReq(req.clone())).await.unwrap();
                }
                signal(&done);
            });
        }
    }
}

fn benches(c: &mut Criterion) {
    let sys = actix::System::new();
    let (
        rt,
        driver,
        sink_url,
        sink_done,
        sink_target,
        driver_done,
        raw,
        raw_sink_done,
        raw_target,
        raw_done,
    ) = sys.block_on(async {
        let rt = Runtime::start(RuntimeConfig::new("bench.org")).unwrap();
        let sink_done: Done = Default::default();
        let sink_target = Arc::new(AtomicU64::new(BATCH));
        let (d, t) = (sink_done.clone(), sink_target.clone());
        let sink = rt
            .spawn_hyperty(HypertySpec::new("sink", "receiver.org", move |ctx| Sink {
                ctx,
                seen: 0,
                target: t.clone(),
                done: d.clone(),
            }))
            .await
            .unwrap();
        let driver_done: Done = Default::default();
        let dd = driver_done.clone();
        let driver = rt
            .spawn_hyperty(HypertySpec::new("driver", "sender.org", move |ctx| {
                Driver {
                    ctx,
                    done: dd.clone(),
                }
            }))
            .await
            .unwrap();

        let raw_sink_done: Done = Default::default();
        let raw_target = Arc::new(AtomicU64::new(BATCH));
        let (d, t) = (raw_sink_done.clone(), raw_target.clone());
        let sink_arbiter = Arbiter::new();
        let raw_sink = RawSink::start_in_arbiter(&sink_arbiter.handle(), move |_| RawSink {
            seen: 0,
            target: t,
            done: d,
        });
        let raw_done: Done = Default::default();
        let rd = raw_done.clone();
        let driver_arbiter = Arbiter::new();
        let from: Address = "hyperty://bench.org/raw-a".parse().unwrap();
        let to: Address = "hyperty://bench.org/raw-b".parse().unwrap();
        let raw = RawDriver::start_in_arbiter(&driver_arbiter.handle(), move |_| RawDriver {
            sink: raw_sink,
            from,
            to,
            done: rd,
        });
        std::mem::forget((sink_arbiter, driver_arbiter));
        (
            rt,
            driver.into_address(),
            sink.into_address(),
            sink_done,
            sink_target,
            driver_done,
            raw,
            raw_sink_done,
            raw_target,
            raw_done,
        )
    });
    let app = rt.url().component("bench");

    let run_bus = |mode: &str, n: u64, done: &Done| -> Duration {
        sys.block_on(async {
            let (tx, rx) = oneshot::channel();
            *done.lock().unwrap() = Some(tx);
            let start = Instant::now();
            rt.bus().send(
                Message::new(MessageType::Execute, app.clone(), driver.clone())
                    .with_value(json!({"mode": mode, "n": n, "to": sink_url.as_str()})),
            );
            rx.await.unwrap();
            start.elapsed()
        })
    };
    let run_raw = |oneway: bool, n: u64, done: &Done| -> Duration {
        sys.block_on(async {
            let (tx, rx) = oneshot::channel();
            *done.lock().unwrap() = Some(tx);
            let start = Instant::now();
            raw.do_send(RawRun { oneway, n });
            rx.await.unwrap();
            start.elapsed()
        })
    };

    let mut g = c.benchmark_group("one_way");
    g.throughput(Throughput::Elements(BATCH));
    sink_target.store(BATCH, Ordering::Relaxed);
    raw_target.store(BATCH, Ordering::Relaxed);
    g.bench_function("bus", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| run_bus("oneway", BATCH, &sink_done))
                .sum()
        })
    });
    g.bench_function("raw_actix", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| run_raw(true, BATCH, &raw_sink_done))
                .sum()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("request_response");
    const RR: u64 = 100;
    g.throughput(Throughput::Elements(RR));
    g.bench_function("bus", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_bus("rr", RR, &driver_done)).sum())
    });
    g.bench_function("raw_actix", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_raw(false, RR, &raw_done)).sum())
    });
    g.finish();
}

criterion_group! {
    name = bus;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(bus);
