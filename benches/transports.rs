//! The node's raw-WebSocket transport against nats-server over WebSocket, side by side
//! in one run: a 1→1 flood and a 1→N fan-out flood (default 10).
//!
//! Both servers run as their own processes on 127.0.0.1 and are loaded by the same
//! client ([`run_flood`](load::run_flood)): one publisher connection, N subscriber
//! connections, a window of messages in flight per subscriber, the same reTHINK
//! `update` frame as payload, parsed and checked as JSON by every subscriber.
//!
//! * The node runs with `[auth] mode = "required"` (every session opens with an ID
//!   token from its IdP), ownership checks (always on) and the PEP on: a policy file of
//!   `--rules` deny rules that do not match the traffic, so every frame is decided
//!   against all of them. 1→1 goes to the subscriber's runtime URL; 1→N to a resource
//!   the N sessions subscribed to through `/sm`. `--workers` sets its `[node] workers`
//!   (default: one per core).
//! * nats-server (`apt-get install nats-server`) runs with `websocket { no_tls: true }`
//!   and user/password authorization; every subscriber `SUB`s one subject.
//!
//! Rounds alternate which server goes first; the table shows per-side medians and the
//! ratio node / nats-server.
//!
//! ```sh
//! cargo bench --bench transports -- --rounds 5
//! cargo bench --bench transports -- --rounds 5 --workers 1
//! cargo bench --bench transports -- --rounds 5 --json transports.json
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

#[path = "loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod load;

use load::{cpu_time, run_flood, FloodReport, LoadError, NatsProcess, NodeProcess, Params, Target};

#[derive(Debug, Parser)]
struct Args {
    /// Rounds; each loads both servers with every scenario.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Messages the publisher sends in the 1→1 flood.
    #[arg(long, default_value_t = 300_000)]
    messages: u64,
    /// Messages the publisher sends in the fan-out flood.
    #[arg(long, default_value_t = 100_000)]
    fanout_messages: u64,
    /// Subscribers of the fan-out flood.
    #[arg(long, default_value_t = 10)]
    fanout: usize,
    /// Messages in flight per subscriber.
    #[arg(long, default_value_t = 1_000)]
    window: u64,
    /// Length of each message's serialised `body.value`.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// The node's `[node] workers` (0: one per core, the node's default).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Deny rules in the node's policy file.
    #[arg(long, default_value_t = 100)]
    rules: usize,
    /// The nats-server binary.
    #[arg(long, default_value = "nats-server")]
    nats_server: String,
    /// The node binary (default: the one built with this bench).
    #[arg(long)]
    node: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Load only this side (`node` or `nats`), e.g. to profile it.
    #[arg(long, value_parser = ["node", "nats"])]
    only: Option<String>,
    /// `cargo bench` passes `--bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    scenario: String,
    node: Vec<FloodReport>,
    nats: Vec<FloodReport>,
    node_median: f64,
    nats_median: f64,
    ratio: f64,
    node_p50_us: f64,
    nats_p50_us: f64,
    /// Server CPU time (user + system) per delivery, µs: what a run costs the
    /// server whatever else the machine is doing.
    node_cpu_us: f64,
    nats_cpu_us: f64,
}

fn policies(rules: usize) -> String {
    let mut s = String::from("[[policies]]\nid = \"bench\"\ncombining = \"first-applicable\"\n");
    for i in 0..rules {
        let target = if i % 2 == 0 {
            format!("to = [\"runtime://elsewhere.example/blocked-{i}\"]")
        } else {
            format!("from = [\"runtime://elsewhere.example/bad-{i}*\"]")
        };
        s.push_str(&format!(
            "  [[policies.rules]]\n  id = \"r{i}\"\n  effect = \"deny\"\n  target = {{ {target} }}\n"
        ));
    }
    s
}

const NODE_CONFIG: &str = "[node]\nworkers = {workers}\n[auth]\nmode = \"required\"\n\
    [limits]\nmessages_per_second = 100000000\nburst = 100000000\nmax_sessions_per_ip = 100000\n\
    [identity]\ndata_dir = \"{dir}/idp\"\n\
    [policy]\nfile = \"{dir}/policies.toml\"\n";

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(args: &Args) -> Result<Vec<Row>, LoadError> {
    let bin = args
        .node
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hyperty")));
    let config = NODE_CONFIG.replace("{workers}", &args.workers.to_string());
    let node = NodeProcess::start(&bin, &config, &[("policies.toml", &policies(args.rules))])?;
    let token = node.user_token("bench", "bench password 1").await?;
    let nats = NatsProcess::start(&args.nats_server).await?;
    eprintln!("node {} · nats-server {}", node.ws_url, nats.ws_url);
    let node_target = Target::Node {
        url: node.ws_url.clone(),
    };
    let nats_target = Target::Nats {
        url: nats.ws_url.clone(),
        auth: nats.auth.clone(),
    };
    let scenarios = [
        ("1→1 flood".to_string(), 1, args.messages),
        (
            format!("1→{} fan-out flood", args.fanout),
            args.fanout,
            args.fanout_messages,
        ),
    ];
    let mut rows = Vec::new();
    for (name, subscribers, messages) in scenarios {
        let p = Params {
            messages,
            window: args.window,
            size: args.size,
            subscribers,
            token: Some(token.clone()),
            time_limit: Duration::from_secs(300),
            ..Params::default()
        };
        let (mut on_node, mut on_nats) = (Vec::new(), Vec::new());
        let (mut node_cpu, mut nats_cpu) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [&node_target, &nats_target]
            } else {
                [&nats_target, &node_target]
            };
            for target in order {
                let side = if matches!(target, Target::Node { .. }) {
                    "node"
                } else {
                    "nats"
                };
                if args.only.as_deref().is_some_and(|o| o != side) {
                    continue;
                }
                let pid = match target {
                    Target::Node { .. } => node.pid(),
                    Target::Nats { .. } => nats.pid(),
                };
                let cpu_before = cpu_time(pid);
                let r = run_flood(target, &p).await?;
                r.verify()?;
                let cpu_us = match (cpu_before, cpu_time(pid)) {
                    (Some(a), Some(b)) if r.deliveries > 0 => {
                        b.saturating_sub(a).as_secs_f64() * 1e6 / r.deliveries as f64
                    }
                    _ => 0.0,
                };
                eprintln!(
                    "{name} round {round} {side}: {:.0} deliveries/s, p50 {:.0} µs, \
                     server CPU {cpu_us:.2} µs/delivery",
                    r.deliveries_per_sec, r.latency.p50_us
                );
                match target {
                    Target::Node { .. } => {
                        on_node.push(r);
                        node_cpu.push(cpu_us);
                    }
                    Target::Nats { .. } => {
                        on_nats.push(r);
                        nats_cpu.push(cpu_us);
                    }
                }
            }
        }
        let node_median = median(on_node.iter().map(|r| r.deliveries_per_sec).collect());
        let nats_median = median(on_nats.iter().map(|r| r.deliveries_per_sec).collect());
        rows.push(Row {
            scenario: name,
            node_p50_us: median(on_node.iter().map(|r| r.latency.p50_us).collect()),
            nats_p50_us: median(on_nats.iter().map(|r| r.latency.p50_us).collect()),
            node_cpu_us: median(node_cpu),
            nats_cpu_us: median(nats_cpu),
            node: on_node,
            nats: on_nats,
            ratio: if nats_median > 0.0 {
                node_median / nats_median
            } else {
                0.0
            },
            node_median,
            nats_median,
        });
    }
    Ok(rows)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the client runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = match rt.block_on(run(&args)) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "| scenario | node (auth + PEP, {} rules) | nats-server (WebSocket) | node / nats | p50 node | p50 nats | server CPU / delivery, node | nats |",
        args.rules
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} M/s | {:.2} M/s | **{:.2}×** | {:.0} µs | {:.0} µs | {:.2} µs | {:.2} µs |",
            r.scenario,
            r.node_median / 1e6,
            r.nats_median / 1e6,
            r.ratio,
            r.node_p50_us,
            r.nats_p50_us,
            r.node_cpu_us,
            r.nats_cpu_us
        );
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
