//! Load generator for a reTHINK messaging node, measured against a transport-limit baseline.
//!
//! A node speaks the raw-WebSocket dialect of the reTHINK wire: one JSON message per text
//! frame on `ws://HOST:PORT/ws`, a session opened with
//! `{"id":1,"type":"open","from":"runtime://D/<id>","to":"mn:/session"}` (answered with code
//! 200), after which every message whose `to` lies under the session's runtime URL is
//! delivered to that session unchanged, and `/sm` subscriptions
//! (`domain://msg-node.D/sm`, `body.resources`) route a resource to every subscriber.
//!
//! In the same process this binary also starts a **baseline relay**: a minimal
//! tokio-tungstenite server that speaks that same contract (open, owner routing by URL
//! prefix, `/sm` subscribe) and nothing else. It is the transport limit a node is compared
//! with, in the same run, on the same machine.
//!
//! # What is measured
//!
//! * **Relay mode** (default): `--pairs N` pairs of sessions. In each pair, session `a`
//!   sends `--messages M` `update` messages to `runtime://D/<b>/h`, keeping at most
//!   `--window W` of them in flight. The receiver publishes how many it has seen through an
//!   in-process atomic counter, so flow control adds no wire traffic. Each message carries
//!   its send time (nanoseconds since a process-wide origin) and padding in `body.value`;
//!   `--size` is the length of that serialised `body.value` object (the envelope adds
//!   about 130 bytes with the default domain; the report prints the frame size).
//!   Reported: sent, delivered (distinct ids at the right session, checked equal to sent),
//!   msgs/s from the first send to the last delivery, and one-way latency p50/p99/max
//!   (µs). The latency is measured under load, so it includes the queueing the window
//!   allows; `--window 1` measures an unloaded hop.
//! * **Fan-out mode** (`--fanout N`): N sessions subscribe to one resource
//!   (`comm://D/<run>/changes`); one publisher session sends `--updates K` updates to it,
//!   one at a time, each after every subscriber has received the previous one. Reported:
//!   per-update time from send until the last of the N subscribers has read it
//!   (p50/p99/max), and the per-delivery latency. The client side reads all N sockets on
//!   one thread, so the time includes the clients' own reading.
//!
//! Every run is made against the node (`--url`) and then against the baseline, and the
//! ratios node/baseline are printed. Without `--url` only the baseline runs;
//! `--self-test` starts a second baseline relay and measures it as if it were the node.
//!
//! # Running
//!
//! ```sh
//! cargo bench --bench loadgen -- --self-test
//! cargo bench --bench loadgen -- --url ws://127.0.0.1:9090/ws --pairs 4 --messages 50000
//! cargo bench --bench loadgen -- --url ws://127.0.0.1:9090/ws --fanout 1000 --updates 200
//! cargo bench --bench loadgen -- --help
//! ```
//!
//! Only loopback targets (`127.0.0.0/8`, `::1`, `localhost`) are accepted. Every run is
//! bounded: a global deadline (`--deadline-secs`, whole invocation) and a stall timeout
//! (`--stall-secs`, no delivery progress) stop it and report what was seen. The exit code
//! is non-zero on any error (refused connection, rejected `open`, timeout) and whenever
//! delivered != sent.
//!
//! The clients run on one current-thread tokio runtime (one core's worth of client); the
//! baseline relay runs on its own multi-thread runtime (`--relay-threads`, default 2).
//!
//! # Use from other code
//!
//! The measuring code lives in `benches/loadgen/` and does not depend on this command
//! line: `run_relay_load`, `run_fanout` and `start_baseline_relay` run on any tokio runtime
//! (they use `tokio::spawn`), so a test or bench that starts a node in-process can include
//! that directory with `#[path = "../benches/loadgen/mod.rs"] mod loadgen;` and call them
//! with the node's URL.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::time::Instant;

#[path = "loadgen/mod.rs"]
mod load;

use load::{
    check_loopback, run_fanout, run_relay_load, start_baseline_relay, FanoutReport, LoadError,
    Params, RelayHandle, Report,
};

// ---- command line -------------------------------------------------------------------

/// Load generator for a reTHINK messaging node, with an in-process transport-limit
/// baseline relay measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Node under test, e.g. ws://127.0.0.1:9090/ws (loopback only). Without it, only the
    /// baseline runs.
    #[arg(long, conflicts_with = "self_test")]
    url: Option<String>,
    /// Start a second baseline relay and measure it as the node.
    #[arg(long)]
    self_test: bool,
    /// Sender/receiver session pairs.
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    /// Messages per pair.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Bytes of each message's serialised body.value (timestamp + padding).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages in flight per pair.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Domain of the runtime URLs and of domain://msg-node.DOMAIN/sm.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Token put into body.token of every open.
    #[arg(long)]
    token: Option<String>,
    /// Fan-out mode: this many subscriber sessions on one resource.
    #[arg(long)]
    fanout: Option<usize>,
    /// Fan-out mode: updates published, one at a time.
    #[arg(long, default_value_t = 200)]
    updates: u64,
    /// Worker threads of the in-process baseline relay runtime.
    #[arg(long, default_value_t = 2)]
    relay_threads: usize,
    /// Deadline for the whole invocation; runs stop and report what they saw.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    /// Stop a run when no delivery progress is seen for this long.
    #[arg(long, default_value_t = 10)]
    stall_secs: u64,
    /// Print one machine-readable JSON line instead of the text report.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn params(&self) -> Params {
        Params {
            pairs: self.pairs,
            messages: self.messages,
            size: self.size,
            window: self.window,
            domain: self.domain.clone(),
            token: self.token.clone(),
            subscribers: self.fanout.unwrap_or(Params::default().subscribers),
            updates: self.updates,
            time_limit: Duration::from_secs(self.deadline_secs),
            stall: Duration::from_secs(self.stall_secs),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run_cli(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the baseline relay(s) on their own runtime, runs the clients on a
/// current-thread runtime, and prints the report. `Ok(false)` means a run failed or lost
/// messages (already printed).
fn run_cli(args: &Args) -> Result<bool, LoadError> {
    let params = args.params();
    params.validate()?;
    if let Some(url) = &args.url {
        check_loopback(url)?;
    }
    if args.relay_threads == 0 || args.relay_threads > 64 {
        return Err(LoadError::BadParams("relay-threads must be 1..=64".into()));
    }
    let relay_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.relay_threads)
        .thread_name("baseline-relay")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + params.time_limit;

    let (base_addr, base) = relay_rt.block_on(start_baseline_relay())?;
    let baseline_url = format!("ws://{base_addr}/ws");
    let (node_url, self_node): (Option<String>, Option<RelayHandle>) = if args.self_test {
        let (addr, handle) = relay_rt.block_on(start_baseline_relay())?;
        (Some(format!("ws://{addr}/ws")), Some(handle))
    } else {
        (args.url.clone(), None)
    };

    let all_delivered = client_rt.block_on(async {
        let node = node_url.as_deref();
        if args.fanout.is_some() {
            fanout_mode(node, &baseline_url, &params, deadline, args).await
        } else {
            relay_mode(node, &baseline_url, &params, deadline, args).await
        }
    });
    relay_rt.block_on(async {
        base.shutdown().await;
        if let Some(h) = self_node {
            h.shutdown().await;
        }
    });
    Ok(all_delivered)
}

/// `p` with the time left until the global deadline as its limit.
fn remaining(p: &Params, deadline: Instant) -> Params {
    Params {
        time_limit: deadline.saturating_duration_since(Instant::now()),
        ..p.clone()
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn label_for(is_node: bool, self_test: bool) -> &'static str {
    match (is_node, self_test) {
        (true, true) => "node (2nd baseline)",
        (true, false) => "node",
        (false, _) => "baseline",
    }
}

/// Runs the node (if any) and then the baseline; a run that fails is reported and the
/// other still runs. Returns whether every run delivered everything.
async fn relay_mode(
    node: Option<&str>,
    baseline: &str,
    p: &Params,
    deadline: Instant,
    args: &Args,
) -> bool {
    let node_report = match node {
        Some(url) => Some(run_relay_load(url, &remaining(p, deadline)).await),
        None => None,
    };
    let base_report = run_relay_load(baseline, &remaining(p, deadline)).await;
    let node_ok = node_report.as_ref().and_then(|r| r.as_ref().ok());
    let base_ok = base_report.as_ref().ok();
    let both = node_ok.zip(base_ok);
    let throughput = both.and_then(|(n, b)| ratio(n.msgs_per_sec, b.msgs_per_sec));
    let p50 = both.and_then(|(n, b)| ratio(n.latency.p50_us, b.latency.p50_us));
    let problems = problems(
        node_report
            .iter()
            .chain(std::iter::once(&base_report))
            .map(|r| r.as_ref().map_err(|e| e.to_string()).and_then(verify_relay)),
    );

    if args.json {
        let line = serde_json::json!({
            "mode": "relay",
            "params": {
                "pairs": p.pairs, "messages": p.messages, "size": p.size, "window": p.window,
                "domain": p.domain, "relay_threads": args.relay_threads,
            },
            "node": node_ok,
            "baseline": base_ok,
            "throughput_ratio": throughput,
            "p50_ratio": p50,
            "self_test": args.self_test,
            "errors": problems,
            "ok": problems.is_empty(),
        });
        println!("{line}");
    } else {
        let frame_bytes = base_ok.or(node_ok).map_or(0, |r| r.frame_bytes);
        println!(
            "relay load: {} pairs x {} messages, body.value {} B (frames of {frame_bytes} B), window {}",
            p.pairs, p.messages, p.size, p.window
        );
        if let Some(n) = node_ok {
            print_relay(label_for(true, args.self_test), n);
        }
        if let Some(b) = base_ok {
            print_relay(label_for(false, args.self_test), b);
        }
        if let (Some(t), Some(l)) = (throughput, p50) {
            println!("throughput ratio node/baseline = {t:.2}");
            println!("p50 ratio node/baseline = {l:.2}");
        }
    }
    for e in &problems {
        eprintln!("loadgen: {e}");
    }
    problems.is_empty()
}

fn verify_relay(r: &Report) -> Result<(), String> {
    r.verify().map_err(|e| format!("LOSS: {e}"))
}

fn verify_fanout(r: &FanoutReport) -> Result<(), String> {
    r.verify().map_err(|e| format!("LOSS: {e}"))
}

/// The error messages among `outcomes`.
fn problems(outcomes: impl Iterator<Item = Result<(), String>>) -> Vec<String> {
    outcomes.filter_map(Result::err).collect()
}

fn print_relay(label: &str, r: &Report) {
    println!("  {label:<20} {}", r.url);
    println!(
        "  {:<20} sent {}  delivered {}  in {:.3} s  =  {:.0} msg/s  one-way p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
        "",
        r.sent,
        r.delivered,
        r.elapsed_s,
        r.msgs_per_sec,
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.max_us
    );
    if r.duplicates > 0 || r.unexpected > 0 {
        println!(
            "  {:<20} duplicates {}  unexpected frames {}",
            "", r.duplicates, r.unexpected
        );
    }
}

/// Like [`relay_mode`], for fan-out.
async fn fanout_mode(
    node: Option<&str>,
    baseline: &str,
    p: &Params,
    deadline: Instant,
    args: &Args,
) -> bool {
    let node_report = match node {
        Some(url) => Some(run_fanout(url, &remaining(p, deadline)).await),
        None => None,
    };
    let base_report = run_fanout(baseline, &remaining(p, deadline)).await;
    let node_ok = node_report.as_ref().and_then(|r| r.as_ref().ok());
    let base_ok = base_report.as_ref().ok();
    let p50 = node_ok
        .zip(base_ok)
        .and_then(|(n, b)| ratio(n.all_received.p50_us, b.all_received.p50_us));
    let problems = problems(
        node_report
            .iter()
            .chain(std::iter::once(&base_report))
            .map(|r| {
                r.as_ref()
                    .map_err(|e| e.to_string())
                    .and_then(verify_fanout)
            }),
    );

    if args.json {
        let line = serde_json::json!({
            "mode": "fanout",
            "params": {
                "subscribers": p.subscribers, "updates": p.updates, "size": p.size,
                "domain": p.domain, "relay_threads": args.relay_threads,
            },
            "node": node_ok,
            "baseline": base_ok,
            "all_received_p50_ratio": p50,
            "self_test": args.self_test,
            "errors": problems,
            "ok": problems.is_empty(),
        });
        println!("{line}");
    } else {
        let frame_bytes = base_ok.or(node_ok).map_or(0, |r| r.frame_bytes);
        println!(
            "fan-out: {} subscribers, {} updates one at a time, body.value {} B (frames of {frame_bytes} B)",
            p.subscribers, p.updates, p.size
        );
        if let Some(n) = node_ok {
            print_fanout(label_for(true, args.self_test), n);
        }
        if let Some(b) = base_ok {
            print_fanout(label_for(false, args.self_test), b);
        }
        if let Some(r) = p50 {
            println!("fan-out all-received p50 ratio node/baseline = {r:.2}");
        }
    }
    for e in &problems {
        eprintln!("loadgen: {e}");
    }
    problems.is_empty()
}

fn print_fanout(label: &str, r: &FanoutReport) {
    let a = &r.all_received;
    let d = &r.per_delivery;
    println!("  {label:<20} {}", r.url);
    println!(
        "  {:<20} updates {}/{}  deliveries {}  all received: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  per delivery: p50 {:.1} µs  p99 {:.1} µs",
        "",
        r.updates_completed,
        r.updates_sent,
        r.deliveries,
        a.p50_us / 1_000.0,
        a.p99_us / 1_000.0,
        a.max_us / 1_000.0,
        d.p50_us,
        d.p99_us
    );
    if r.duplicates > 0 || r.unexpected > 0 {
        println!(
            "  {:<20} duplicates {}  unexpected frames {}",
            "", r.duplicates, r.unexpected
        );
    }
}
