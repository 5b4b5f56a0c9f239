//! What the metrics cost on the relay path: one node with `[metrics] enabled = true`
//! (the default) and one with `enabled = false`, started in this process side by side,
//! each measured with the load generator's relay mode (`benches/loadgen`: pairs of
//! sessions, `update` frames, a window in flight), alternating which goes first, for
//! `--rounds` rounds. Reported: the median msgs/s and one-way p50 of each, and the
//! ratio on/off.
//!
//! ```sh
//! cargo bench --bench metrics
//! cargo bench --bench metrics -- --rounds 7 --messages 100000
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[path = "loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod load;

#[derive(Debug, Parser)]
struct Args {
    /// Rounds (each measures both nodes).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Sender/receiver session pairs.
    #[arg(long, default_value_t = 2)]
    pairs: usize,
    /// Messages each pair sends per round.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Messages in flight per pair.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

fn config(metrics: bool) -> hyperty::config::NodeConfig {
    let mut cfg = hyperty::config::NodeConfig::default();
    cfg.node.domain = "localhost".into();
    cfg.node.workers = 2;
    cfg.node.data_dir = None;
    cfg.identity.data_dir = None;
    cfg.auth.mode = hyperty::config::AuthMode::Optional;
    cfg.limits.messages_per_second = 100_000_000;
    cfg.limits.burst = 100_000_000;
    cfg.metrics.enabled = metrics;
    cfg
}

/// Starts both nodes on their own actix system thread; their WebSocket URLs (on, off).
fn start_nodes() -> (String, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let start = |metrics| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                hyperty::node::start(l, config(metrics)).expect("node")
            };
            let (on, off) = (start(true), start(false));
            let _ = tx.send((on.ws_url(), off.ws_url()));
            std::future::pending::<()>().await;
        })
    });
    rx.recv().expect("nodes started")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (on, off) = start_nodes();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let p = load::Params {
        pairs: args.pairs,
        messages: args.messages,
        window: args.window,
        time_limit: Duration::from_secs(120),
        ..load::Params::default()
    };
    let (mut rates, mut p50s) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 0..args.rounds.max(1) {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let url = if side == 0 { &on } else { &off };
            match rt.block_on(load::run_relay_load(url, &p)) {
                Ok(r) if r.verify().is_ok() => {
                    println!(
                        "round {round} metrics {}: {:.0} msgs/s, p50 {:.0} µs",
                        if side == 0 { "on " } else { "off" },
                        r.msgs_per_sec,
                        r.latency.p50_us
                    );
                    rates[side].push(r.msgs_per_sec);
                    p50s[side].push(r.latency.p50_us);
                }
                Ok(r) => {
                    eprintln!("round {round}: delivered {} of {}", r.delivered, r.sent);
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("round {round}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let [on_rates, off_rates] = rates;
    let [on_p50, off_p50] = p50s;
    let (r_on, r_off) = (median(on_rates), median(off_rates));
    println!(
        "median: metrics on {r_on:.0} msgs/s (p50 {:.0} µs), off {r_off:.0} msgs/s (p50 {:.0} µs), on/off {:.3}",
        median(on_p50),
        median(off_p50),
        r_on / r_off
    );
    ExitCode::SUCCESS
}
