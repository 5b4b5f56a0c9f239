//! The benchmarks' load clients (`benches/loadgen`) against a real node (over its raw
//! WebSocket, Socket.IO and HTTP transports), a real nats-server and the plain
//! socket.io 4 relay of `web/bench`: every message reaches every subscriber and is
//! counted once, so the figures in docs/benchmarks.md measure what they say.

mod common;

#[path = "../benches/loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod loadgen;

use loadgen::{run_flood, run_relay_load, NatsProcess, Params, RelayProcess, Target};

fn small(subscribers: usize) -> Params {
    Params {
        pairs: 2,
        messages: 400,
        window: 50,
        subscribers,
        ..Params::default()
    }
}

/// Floods `target` with 1 and then 3 subscribers and checks every count.
async fn floods_count_everything(target: &Target) {
    for subscribers in [1, 3] {
        let r = run_flood(target, &small(subscribers))
            .await
            .unwrap_or_else(|e| panic!("flood of {target:?} with {subscribers}: {e}"));
        r.verify().expect("every subscriber has every message");
        assert_eq!(r.sent, 400, "{target:?}");
        assert_eq!(r.deliveries, 400 * subscribers as u64, "{target:?}");
        assert_eq!((r.duplicates, r.unexpected), (0, 0), "{target:?}");
        assert_eq!(r.latency.samples, r.deliveries, "{target:?}");
    }
}

#[actix::test]
async fn the_socketio_and_http_flood_clients_count_every_message_through_a_node() {
    let node = common::start_node("localhost", |c| {
        c.limits.messages_per_second = 1_000_000;
        c.limits.burst = 1_000_000;
    });
    let http = node.http_url();
    floods_count_everything(&Target::SocketIo {
        url: http.replacen("http://", "ws://", 1),
    })
    .await;
    floods_count_everything(&Target::Http { base: http }).await;
    node.stop().await;
}

#[actix::test]
async fn the_socketio4_flood_client_counts_every_message_through_the_relay() {
    // scripts/test.sh installs Node.js and web/bench/node_modules
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/bench/relay.mjs");
    let relay = RelayProcess::start("node", &script).await.expect("relay");
    floods_count_everything(&Target::SocketIo4 {
        url: relay.url.clone(),
    })
    .await;
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
