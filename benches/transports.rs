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
//! With `--transports`, the same floods compare instead, on one node process, the
//! node's own transports — raw WebSocket (`/ws`), Socket.IO (`/socket.io/`, Engine.IO 3
//! over WebSocket, messages as `42["message","<JSON text>"]` as the reference protostub
//! sends them) and HTTP (`POST /http/send` of JSON arrays of up to
//! [`MAX_SEND_BATCH`](load::MAX_SEND_BATCH) messages, each subscriber a loop of
//! `GET /http/poll` long-polls) — and the node's Socket.IO against a plain socket.io 4
//! relay on Node.js (`web/bench/relay.mjs`, `npm ci` in `web/bench`: each socket joins
//! the room of its `addr` query parameter, each `message` is parsed and emitted to the
//! room of its `to`; no authentication, no ownership checks, no policy). Each round
//! loads the four sides in a rotated order; two tables show the medians.
//! `--only ws|socketio|http|relay` loads one of them.
//!
//! ```sh
//! cargo bench --bench transports -- --rounds 5
//! cargo bench --bench transports -- --rounds 5 --workers 1
//! cargo bench --bench transports -- --rounds 5 --json transports.json
//! cargo bench --bench transports -- --transports --rounds 3
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

#[path = "loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod load;

use load::{
    cpu_time, run_flood, FloodReport, LoadError, NatsProcess, NodeProcess, Params, RelayProcess,
    Target,
};

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
    /// Load only this side (`node` or `nats`; with `--transports`: `ws`, `socketio`,
    /// `http` or `relay`), e.g. to profile it.
    #[arg(long, value_parser = ["node", "nats", "ws", "socketio", "http", "relay"])]
    only: Option<String>,
    /// Compare the node's raw WebSocket, Socket.IO and HTTP transports, and its
    /// Socket.IO against a plain socket.io 4 relay, instead of the node against
    /// nats-server.
    #[arg(long)]
    transports: bool,
    /// The Node.js binary that runs the socket.io 4 relay (`--transports`).
    #[arg(long, default_value = "node")]
    nodejs: String,
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
    [limits]\nmessages_per_second = 100000000\nburst = 100000000\nmax_sessions_per_ip = 100000\nmax_sessions_per_user = 100000\n\
    [identity]\ndata_dir = \"{dir}/idp\"\n\
    [policy]\nfile = \"{dir}/policies.toml\"\n";

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One flood of `target` (a process `pid`): the report, verified, and the server CPU
/// time per delivery (µs).
async fn measure(
    target: &Target,
    pid: u32,
    p: &Params,
    label: &str,
) -> Result<(FloodReport, f64), LoadError> {
    let cpu_before = cpu_time(pid);
    let r = run_flood(target, p).await?;
    r.verify()?;
    let cpu_us = match (cpu_before, cpu_time(pid)) {
        (Some(a), Some(b)) if r.deliveries > 0 => {
            b.saturating_sub(a).as_secs_f64() * 1e6 / r.deliveries as f64
        }
        _ => 0.0,
    };
    eprintln!(
        "{label}: {:.0} deliveries/s, p50 {:.0} µs, server CPU {cpu_us:.2} µs/delivery",
        r.deliveries_per_sec, r.latency.p50_us
    );
    Ok((r, cpu_us))
}

/// The node under load, with an ID token for its sessions.
async fn start_node(args: &Args) -> Result<(NodeProcess, String), LoadError> {
    let bin = args
        .node
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hyperty")));
    let config = NODE_CONFIG.replace("{workers}", &args.workers.to_string());
    let node = NodeProcess::start(&bin, &config, &[("policies.toml", &policies(args.rules))])?;
    let token = node.user_token("bench", "bench password 1").await?;
    Ok((node, token))
}

/// The two scenarios: name, subscribers, messages.
fn scenarios(args: &Args) -> [(String, usize, u64); 2] {
    [
        ("1→1 flood".to_string(), 1, args.messages),
        (
            format!("1→{} fan-out flood", args.fanout),
            args.fanout,
            args.fanout_messages,
        ),
    ]
}

fn params(args: &Args, subscribers: usize, messages: u64, token: &str) -> Params {
    Params {
        messages,
        window: args.window,
        size: args.size,
        subscribers,
        token: Some(token.to_string()),
        time_limit: Duration::from_secs(300),
        ..Params::default()
    }
}

async fn run(args: &Args) -> Result<Vec<Row>, LoadError> {
    let (node, token) = start_node(args).await?;
    let nats = NatsProcess::start(&args.nats_server).await?;
    eprintln!("node {} · nats-server {}", node.ws_url, nats.ws_url);
    let node_target = Target::Node {
        url: node.ws_url.clone(),
    };
    let nats_target = Target::Nats {
        url: nats.ws_url.clone(),
        auth: nats.auth.clone(),
    };
    let mut rows = Vec::new();
    for (name, subscribers, messages) in scenarios(args) {
        let p = params(args, subscribers, messages, &token);
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
                    Target::Nats { .. } => nats.pid(),
                    _ => node.pid(),
                };
                let (r, cpu_us) =
                    measure(target, pid, &p, &format!("{name} round {round} {side}")).await?;
                if matches!(target, Target::Nats { .. }) {
                    on_nats.push(r);
                    nats_cpu.push(cpu_us);
                } else {
                    on_node.push(r);
                    node_cpu.push(cpu_us);
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

/// A side of the `--transports` comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ws,
    SocketIo,
    Http,
    Relay,
}

const SIDES: [Side; 4] = [Side::Ws, Side::SocketIo, Side::Http, Side::Relay];

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ws => "ws",
            Side::SocketIo => "socketio",
            Side::Http => "http",
            Side::Relay => "relay",
        }
    }
}

/// One side's runs of one scenario.
#[derive(Debug, Default, Serialize)]
struct SideRuns {
    runs: Vec<FloodReport>,
    cpu_us: Vec<f64>,
    median: f64,
    p50_us: f64,
    median_cpu_us: f64,
}

impl SideRuns {
    fn push(&mut self, r: FloodReport, cpu_us: f64) {
        self.runs.push(r);
        self.cpu_us.push(cpu_us);
        self.median = median(self.runs.iter().map(|r| r.deliveries_per_sec).collect());
        self.p50_us = median(self.runs.iter().map(|r| r.latency.p50_us).collect());
        self.median_cpu_us = median(self.cpu_us.clone());
    }
}

#[derive(Debug, Serialize)]
struct TransportRow {
    scenario: String,
    ws: SideRuns,
    socketio: SideRuns,
    http: SideRuns,
    relay: SideRuns,
}

impl TransportRow {
    fn side(&mut self, side: Side) -> &mut SideRuns {
        match side {
            Side::Ws => &mut self.ws,
            Side::SocketIo => &mut self.socketio,
            Side::Http => &mut self.http,
            Side::Relay => &mut self.relay,
        }
    }
}

/// `--transports`: every scenario on the node's three transports and the relay.
async fn run_transports(args: &Args) -> Result<Vec<TransportRow>, LoadError> {
    let (node, token) = start_node(args).await?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/bench/relay.mjs");
    let relay = RelayProcess::start(&args.nodejs, &script).await?;
    let origin = format!("ws://{}", node.addr);
    eprintln!("node {origin} · socket.io 4 relay {}", relay.url);
    let target = |side: Side| match side {
        Side::Ws => Target::Node {
            url: node.ws_url.clone(),
        },
        Side::SocketIo => Target::SocketIo {
            url: origin.clone(),
        },
        Side::Http => Target::Http {
            base: format!("http://{}", node.addr),
        },
        Side::Relay => Target::SocketIo4 {
            url: relay.url.clone(),
        },
    };
    let mut rows = Vec::new();
    for (name, subscribers, messages) in scenarios(args) {
        let p = params(args, subscribers, messages, &token);
        let mut row = TransportRow {
            scenario: name.clone(),
            ws: SideRuns::default(),
            socketio: SideRuns::default(),
            http: SideRuns::default(),
            relay: SideRuns::default(),
        };
        for round in 0..args.rounds {
            for k in 0..SIDES.len() {
                let side = SIDES[(round + k) % SIDES.len()];
                if args.only.as_deref().is_some_and(|o| o != side.name()) {
                    continue;
                }
                let pid = match side {
                    Side::Relay => relay.pid(),
                    _ => node.pid(),
                };
                let label = format!("{name} round {round} {}", side.name());
                let (r, cpu_us) = measure(&target(side), pid, &p, &label).await?;
                row.side(side).push(r, cpu_us);
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// A markdown table: `header` (`| a | b |`), its separator, one line a row.
fn print_table(header: &str, lines: impl Iterator<Item = String>) {
    println!("{header}");
    println!(
        "|{}",
        "---|".repeat(header.matches('|').count().saturating_sub(1))
    );
    for line in lines {
        println!("{line}");
    }
}

fn print_transports(args: &Args, rows: &[TransportRow]) {
    let header = format!(
        "| scenario (node: auth + PEP, {} rules) | raw WebSocket | Socket.IO | HTTP | Socket.IO / WS | HTTP / WS | p50 WS | p50 Socket.IO | p50 HTTP | server CPU / delivery, WS | Socket.IO | HTTP |",
        args.rules
    );
    print_table(
        &header,
        rows.iter().map(|r| {
            format!(
                "| {} | {:.3} M/s | {:.3} M/s | {:.3} M/s | **{:.2}×** | **{:.2}×** | {:.0} µs | {:.0} µs | {:.0} µs | {:.2} µs | {:.2} µs | {:.2} µs |",
                r.scenario,
                r.ws.median / 1e6,
                r.socketio.median / 1e6,
                r.http.median / 1e6,
                ratio(r.socketio.median, r.ws.median),
                ratio(r.http.median, r.ws.median),
                r.ws.p50_us,
                r.socketio.p50_us,
                r.http.p50_us,
                r.ws.median_cpu_us,
                r.socketio.median_cpu_us,
                r.http.median_cpu_us,
            )
        }),
    );
    println!();
    let header = format!(
        "| scenario | node Socket.IO (auth + PEP, {} rules) | socket.io 4 relay (no auth, no ownership checks, no policy) | node / relay | p50 node | p50 relay | server CPU / delivery, node | relay |",
        args.rules
    );
    print_table(
        &header,
        rows.iter().map(|r| {
            format!(
                "| {} | {:.3} M/s | {:.3} M/s | **{:.2}×** | {:.0} µs | {:.0} µs | {:.2} µs | {:.2} µs |",
                r.scenario,
                r.socketio.median / 1e6,
                r.relay.median / 1e6,
                ratio(r.socketio.median, r.relay.median),
                r.socketio.p50_us,
                r.relay.p50_us,
                r.socketio.median_cpu_us,
                r.relay.median_cpu_us,
            )
        }),
    );
}

fn write_json(path: &std::path::Path, value: &impl Serialize) -> ExitCode {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
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
    if args.transports {
        if args
            .only
            .as_deref()
            .is_some_and(|o| o == "node" || o == "nats")
        {
            eprintln!("with --transports, --only is one of ws, socketio, http, relay");
            return ExitCode::FAILURE;
        }
        return report(&args, rt.block_on(run_transports(&args)), print_transports);
    }
    if args
        .only
        .as_deref()
        .is_some_and(|o| o != "node" && o != "nats")
    {
        eprintln!("--only {{ws, socketio, http, relay}} needs --transports");
        return ExitCode::FAILURE;
    }
    report(&args, rt.block_on(run(&args)), print_nats)
}

/// Prints the table of a finished run and writes its JSON; or the error.
fn report<R: Serialize>(
    args: &Args,
    rows: Result<Vec<R>, LoadError>,
    print: fn(&Args, &[R]),
) -> ExitCode {
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print(args, &rows);
    match &args.json {
        Some(path) => write_json(path, &rows),
        None => ExitCode::SUCCESS,
    }
}

fn print_nats(args: &Args, rows: &[Row]) {
    let header = format!(
        "| scenario | node (auth + PEP, {} rules) | nats-server (WebSocket) | node / nats | p50 node | p50 nats | server CPU / delivery, node | nats |",
        args.rules
    );
    print_table(
        &header,
        rows.iter().map(|r| {
            format!(
                "| {} | {:.2} M/s | {:.2} M/s | **{:.2}×** | {:.0} µs | {:.0} µs | {:.2} µs | {:.2} µs |",
                r.scenario,
                r.node_median / 1e6,
                r.nats_median / 1e6,
                r.ratio,
                r.node_p50_us,
                r.nats_p50_us,
                r.node_cpu_us,
                r.nats_cpu_us
            )
        }),
    );
}
