//! webinos events: id computation and local dispatch.
//!
//! * `event_id/*`: the SHA-256 id of a typical event (3 primary recipients, a
//!   100-byte payload), of one whose addresses need escaping and sorting of astral
//!   characters, and what a receiver does with wire JSON (parse, validate,
//!   recompute and compare the id).
//! * `local_dispatch/*`: an application dispatches events to another entity of the
//!   same runtime, whose listener counts them: `pipelined` sends a batch without
//!   waiting between dispatches, `sequential` awaits each dispatch, and
//!   `with_notifications` also waits for every `onDelivery`.
//!
//! Run: `cargo bench --bench events`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::{Actor, Context, Handler};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::future::join_all;
use hyperty::prelude::{
    event_id, Address, CallbackSet, Event, EventCallbacks, EventEndpoint, IdFields, IncomingEvent,
    ListenerFilter, RawEvent, ReportKind, Runtime, RuntimeConfig,
};
use tokio::sync::oneshot;

const BATCH: u64 = 1000;
const PAYLOAD: &str = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

type Done = Arc<Mutex<Option<oneshot::Sender<()>>>>;

struct Counter {
    seen: u64,
    target: Arc<AtomicU64>,
    done: Done,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<IncomingEvent> for Counter {
    type Result = ();
    fn handle(&mut self, _: IncomingEvent, _: &mut Context<Self>) {
        self.seen += 1;
        if self.seen == self.target.load(Ordering::Relaxed) {
            self.seen = 0;
            if let Some(tx) = self.done.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }
}

fn id_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_id");
    g.throughput(Throughput::Elements(1));
    let typical = IdFields {
        event_type: "chatMessage",
        source: "hyperty://a.org/6f1c0f0e-5d5e-4a43-9b7e-0d4c2f3a1b2c",
        to: &[
            "hyperty://b.org/0a1b2c3d-aaaa-4bbb-8ccc-111111111111",
            "hyperty://b.org/0a1b2c3d-aaaa-4bbb-8ccc-222222222222",
            "hyperty://c.org/0a1b2c3d-aaaa-4bbb-8ccc-333333333333",
        ],
        in_response_to: None,
        generation_timestamp: Some(1_700_000_000_000),
        expiry_timestamp: Some(1_700_000_060_000),
        payload: Some(PAYLOAD),
        addressing_sensitive: true,
    };
    g.bench_function("typical", |b| {
        b.iter(|| event_id(std::hint::black_box(&typical)))
    });
    let escaped = IdFields {
        source: r"hyperty://a.org/a\b|c,d",
        to: &[
            "hyperty://b.org/\u{1F600},x",
            "hyperty://b.org/\u{FF5E}|y",
            "hyperty://b.org/\u{E000}\\z",
        ],
        ..typical
    };
    g.bench_function("escaped_astral", |b| {
        b.iter(|| event_id(std::hint::black_box(&escaped)))
    });
    let a = |s: &str| -> Address { s.parse().unwrap() };
    let wire = Event::builder("chatMessage", a(typical.source))
        .to_all(typical.to.iter().map(|t| a(t)))
        .cc(a("hyperty://d.org/cc"))
        .generated_at(1_700_000_000_000)
        .payload(PAYLOAD)
        .build()
        .unwrap()
        .to_json();
    g.bench_function("receive_json", |b| {
        b.iter(|| {
            let raw = RawEvent::parse(std::hint::black_box(&wire)).unwrap();
            Event::from_raw(&raw).unwrap()
        })
    });
    g.finish();
}

fn dispatch_benches(c: &mut Criterion) {
    let sys = actix::System::new();
    let target = Arc::new(AtomicU64::new(BATCH));
    let done: Done = Default::default();
    let (rt, sender, to) = sys.block_on(async {
        let rt = Runtime::start(RuntimeConfig::new("bench.org")).unwrap();
        let a: Address = "hyperty://bench.org/sender".parse().unwrap();
        let b: Address = "hyperty://bench.org/receiver".parse().unwrap();
        let sender = rt.events().endpoint(a.clone());
        sender.register_entity(a).await.unwrap();
        let receiver = rt.events().endpoint(b.clone());
        receiver.register_entity(b.clone()).await.unwrap();
        let (t, d) = (target.clone(), done.clone());
        let counter = Counter::create(move |ctx| {
            ctx.set_mailbox_capacity(1 << 16);
            Counter {
                seen: 0,
                target: t,
                done: d,
            }
        });
        receiver
            .add_listener(ListenerFilter::any(), counter.recipient())
            .await
            .unwrap();
        (rt, sender, b)
    });
    let serial = AtomicU64::new(0);
    let event = |ep: &EventEndpoint| {
        // a fresh payload per event: equal events would be duplicates
        let n = serial.fetch_add(1, Ordering::Relaxed);
        Event::builder("chatMessage", ep.owner().clone())
            .to(to.clone())
            .payload(format!("{n} {PAYLOAD}"))
            .build()
            .unwrap()
    };

    let mut g = c.benchmark_group("local_dispatch");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("pipelined", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    sys.block_on(async {
                        let (tx, rx) = oneshot::channel();
                        *done.lock().unwrap() = Some(tx);
                        let start = Instant::now();
                        let sends: Vec<_> = (0..BATCH)
                            .map(|_| sender.dispatch(event(&sender), None, None))
                            .collect();
                        for r in join_all(sends).await {
                            r.unwrap();
                        }
                        rx.await.unwrap();
                        start.elapsed()
                    })
                })
                .sum()
        })
    });
    g.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    sys.block_on(async {
                        let (tx, rx) = oneshot::channel();
                        *done.lock().unwrap() = Some(tx);
                        let start = Instant::now();
                        for _ in 0..BATCH {
                            sender.dispatch(event(&sender), None, None).await.unwrap();
                        }
                        rx.await.unwrap();
                        start.elapsed()
                    })
                })
                .sum()
        })
    });
    g.bench_function("with_notifications", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    sys.block_on(async {
                        let (tx, rx) = oneshot::channel();
                        *done.lock().unwrap() = Some(tx);
                        let (callbacks, mut reports) =
                            EventCallbacks::channel(CallbackSet::delivery());
                        let start = Instant::now();
                        let sends: Vec<_> = (0..BATCH)
                            .map(|_| sender.dispatch(event(&sender), Some(callbacks.clone()), None))
                            .collect();
                        for r in join_all(sends).await {
                            r.unwrap();
                        }
                        let mut delivered = 0;
                        while delivered < BATCH {
                            match reports.recv(Duration::from_secs(10)).await {
                                Some(r) if matches!(r.kind, ReportKind::Delivery { .. }) => {
                                    delivered += 1
                                }
                                Some(_) => {}
                                None => panic!("missing onDelivery"),
                            }
                        }
                        rx.await.unwrap();
                        start.elapsed()
                    })
                })
                .sum()
        })
    });
    g.finish();
    sys.block_on(rt.shutdown());
}

criterion_group! {
    name = events;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = id_benches, dispatch_benches
}
criterion_main!(events);
