//! The benchmarks' load clients (`benches/loadgen`) against a real node and, where it
//! is installed, a real nats-server: every message reaches every subscriber and is
//! counted once, so the figures in docs/benchmarks.md measure what they say.

mod common;

#[path = "../benches/loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod loadgen;

use loadgen::{run_flood, run_relay_load, NatsProcess, Params, Target};

fn small(subscribers: usize) -> Params {
    Params {
        pairs: 2,
        messages: 400,
        window: 50,
        subscribers,
        ..Params::default()
    }
}

#[actix::test]
async fn the_flood_and_relay_clients_count_every_message_through_a_node() {
    let node = common::start_node("localhost", |c| {
        c.limits.messages_per_second = 1_000_000;
        c.limits.burst = 1_000_000;
    });
    let target = Target::Node { url: node.ws_url() };
    for subscribers in [1, 3] {
        let r = run_flood(&target, &small(subscribers))
            .await
            .expect("flood");
        r.verify().expect("every subscriber has every message");
        assert_eq!(r.deliveries, 400 * subscribers as u64);
        assert_eq!((r.duplicates, r.unexpected), (0, 0));
        assert_eq!(r.latency.samples, r.deliveries);
    }
    let r = run_relay_load(&node.ws_url(), &small(1))
        .await
        .expect("relay");
    r.verify().expect("every pair delivered everything");
    assert_eq!((r.sent, r.delivered, r.unexpected), (800, 800, 0));
    node.stop().await;
}

#[actix::test]
async fn the_flood_client_counts_every_message_through_nats_server() {
    // scripts/test.sh installs it (apt-get install nats-server)
    let nats = NatsProcess::start("nats-server")
        .await
        .expect("nats-server");
    let target = Target::Nats {
        url: nats.ws_url.clone(),
        auth: nats.auth.clone(),
    };
    for subscribers in [1, 3] {
        let r = run_flood(&target, &small(subscribers))
            .await
            .expect("flood");
        r.verify().expect("every subscriber has every message");
        assert_eq!((r.duplicates, r.unexpected), (0, 0));
    }
    // wrong credentials are refused, not hung on
    let wrong = Target::Nats {
        url: nats.ws_url.clone(),
        auth: loadgen::NatsAuth {
            user: "bench".into(),
            password: "wrong".into(),
        },
    };
    assert!(run_flood(&wrong, &small(1)).await.is_err());
}
