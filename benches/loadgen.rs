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
//! Each round measures the node (`--url`) and the baseline one after the other;
//! `--rounds R` repeats that, alternating which side goes first, and takes the ratios
//! node/baseline between the per-side medians (run-to-run noise on a shared 2-core machine
//! is large; compare within one invocation). Without `--url` only the baseline runs;
//! `--self-test` starts a second baseline relay and measures it as if it were the node.
//!
//! # Running
//!
//! ```sh
//! cargo bench --bench loadgen -- --self-test --rounds 5
//! cargo bench --bench loadgen -- --url ws://127.0.0.1:9090/ws --pairs 4 --messages 50000
//! cargo bench --bench loadgen -- --url ws://127.0.0.1:9090/ws --fanout 1000 --updates 200
//! cargo bench --bench loadgen -- --self-test --json relay.json   # also as JSON, for the plots
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
use futures_util::future::{FutureExt, LocalBoxFuture};
use tokio::time::Instant;

#[path = "loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod load;

use load::{
    check_loopback, run_fanout, run_relay_load, start_baseline_relay, FanoutReport, LoadError,
    Params, RelayHandle, Report,
};

// ---- command line -------------------------------------------------------------------

/// Most rounds one invocation may run.
const MAX_ROUNDS: usize = 20;

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
    /// Measure node and baseline this many times each, alternating which goes first; the
    /// ratios are taken between the medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Worker threads of the in-process baseline relay runtime.
    #[arg(long, default_value_t = 2)]
    relay_threads: usize,
    /// Deadline for the whole invocation; runs stop and report what they saw.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    /// Stop a run when no delivery progress is seen for this long.
    #[arg(long, default_value_t = 10)]
    stall_secs: u64,
    /// Print one machine-readable JSON line instead of the text report; with a FILE,
    /// write it there and print the text report as well (`scripts/plot_benchmarks.py`
    /// reads these files).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    json: Option<Option<std::path::PathBuf>>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// `--json` without a file: the JSON line replaces the text report.
    fn json_only(&self) -> bool {
        matches!(self.json, Some(None))
    }

    /// Prints `line` (`--json`) or writes it to the file (`--json FILE`).
    fn write_json(&self, line: &serde_json::Value) -> Result<(), String> {
        match &self.json {
            Some(Some(path)) => std::fs::write(path, format!("{line}\n"))
                .map_err(|e| format!("cannot write {}: {e}", path.display())),
            _ => {
                println!("{line}");
                Ok(())
            }
        }
    }

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
    if !(1..=MAX_ROUNDS).contains(&args.rounds) {
        return Err(LoadError::BadParams(format!(
            "rounds must be 1..={MAX_ROUNDS}"
        )));
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

/// One measuring function, boxed so both modes share the round logic.
type RunFn<R> = for<'a> fn(&'a str, &'a Params) -> LocalBoxFuture<'a, Result<R, LoadError>>;

fn relay_run<'a>(url: &'a str, p: &'a Params) -> LocalBoxFuture<'a, Result<Report, LoadError>> {
    run_relay_load(url, p).boxed_local()
}

fn fanout_run<'a>(
    url: &'a str,
    p: &'a Params,
) -> LocalBoxFuture<'a, Result<FanoutReport, LoadError>> {
    run_fanout(url, p).boxed_local()
}

/// The reports of every round, per side, and the errors that stopped a side.
struct Rounds<R> {
    node: Vec<R>,
    baseline: Vec<R>,
    errors: Vec<String>,
}

/// Runs `rounds` rounds, alternating which side goes first (node first in odd-numbered
/// rounds, counting from 1), so neither side always gets the warmer or the colder
/// machine. A side whose run fails is not run again.
async fn alternate<R>(
    node: Option<&str>,
    baseline: &str,
    p: &Params,
    deadline: Instant,
    rounds: usize,
    run: RunFn<R>,
) -> Rounds<R> {
    let mut out = Rounds {
        node: Vec::new(),
        baseline: Vec::new(),
        errors: Vec::new(),
    };
    let (mut node_alive, mut base_alive) = (node.is_some(), true);
    for round in 0..rounds {
        let sides = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_node in sides {
            let (url, alive) = match (is_node, node) {
                (true, Some(url)) => (url, &mut node_alive),
                (true, None) => continue,
                (false, _) => (baseline, &mut base_alive),
            };
            if !*alive {
                continue;
            }
            match run(url, &remaining(p, deadline)).await {
                Ok(r) if is_node => out.node.push(r),
                Ok(r) => out.baseline.push(r),
                Err(e) => {
                    *alive = false;
                    out.errors.push(e.to_string());
                }
            }
        }
    }
    out
}

/// Median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn side_label(is_node: bool, self_test: bool) -> &'static str {
    match (is_node, self_test) {
        (true, true) => "node (2nd baseline)",
        (true, false) => "node",
        (false, _) => "baseline",
    }
}

fn round_label(label: &str, round: usize, rounds: usize) -> String {
    if rounds > 1 {
        format!("{label} #{}", round + 1)
    } else {
        label.to_string()
    }
}

/// Prints the errors and losses of `rounds` and returns them.
fn problems<R>(rounds: &Rounds<R>, verify: fn(&R) -> Result<(), LoadError>) -> Vec<String> {
    let losses = rounds
        .node
        .iter()
        .chain(&rounds.baseline)
        .filter_map(|r| verify(r).err())
        .map(|e| format!("LOSS: {e}"));
    let all: Vec<String> = rounds.errors.iter().cloned().chain(losses).collect();
    for e in &all {
        eprintln!("loadgen: {e}");
    }
    all
}

/// Relay mode: every round measures the node (if any) and the baseline; the ratios are
/// taken between the medians. Returns whether every run delivered everything.
async fn relay_mode(
    node: Option<&str>,
    baseline: &str,
    p: &Params,
    deadline: Instant,
    args: &Args,
) -> bool {
    let rounds = alternate(node, baseline, p, deadline, args.rounds, relay_run).await;
    let rate = |rs: &[Report]| median(rs.iter().map(|r| r.msgs_per_sec).collect());
    let p50 = |rs: &[Report]| median(rs.iter().map(|r| r.latency.p50_us).collect());
    let p99 = |rs: &[Report]| median(rs.iter().map(|r| r.latency.p99_us).collect());
    let throughput_ratio = ratio(rate(&rounds.node), rate(&rounds.baseline));
    let p50_ratio = ratio(p50(&rounds.node), p50(&rounds.baseline));

    if !args.json_only() {
        let frame_bytes = rounds.baseline.first().map_or(0, |r| r.frame_bytes);
        println!(
            "relay load: {} pairs x {} messages, body.value {} B (frames of {frame_bytes} B), window {}, {} round(s)",
            p.pairs, p.messages, p.size, p.window, args.rounds
        );
        for (is_node, reports) in [(true, &rounds.node), (false, &rounds.baseline)] {
            let label = side_label(is_node, args.self_test);
            for (i, r) in reports.iter().enumerate() {
                print_relay(&round_label(label, i, args.rounds), r);
            }
            if args.rounds > 1 && !reports.is_empty() {
                println!(
                    "  {:<22} median {:.0} msg/s  one-way p50 {:.1} µs  p99 {:.1} µs",
                    label,
                    rate(reports).unwrap_or(0.0),
                    p50(reports).unwrap_or(0.0),
                    p99(reports).unwrap_or(0.0)
                );
            }
        }
        if let (Some(t), Some(l)) = (throughput_ratio, p50_ratio) {
            println!("throughput ratio node/baseline = {t:.2}");
            println!("p50 ratio node/baseline = {l:.2}");
        }
    }
    let problems = problems(&rounds, Report::verify);
    if args.json.is_some() {
        let line = serde_json::json!({
            "mode": "relay",
            "params": {
                "pairs": p.pairs, "messages": p.messages, "size": p.size, "window": p.window,
                "domain": p.domain, "relay_threads": args.relay_threads, "rounds": args.rounds,
            },
            "node": rounds.node,
            "baseline": rounds.baseline,
            "node_median": {
                "msgs_per_sec": rate(&rounds.node), "p50_us": p50(&rounds.node),
                "p99_us": p99(&rounds.node),
            },
            "baseline_median": {
                "msgs_per_sec": rate(&rounds.baseline), "p50_us": p50(&rounds.baseline),
                "p99_us": p99(&rounds.baseline),
            },
            "throughput_ratio": throughput_ratio,
            "p50_ratio": p50_ratio,
            "self_test": args.self_test,
            "errors": problems,
            "ok": problems.is_empty(),
        });
        if let Err(e) = args.write_json(&line) {
            eprintln!("loadgen: {e}");
            return false;
        }
    }
    problems.is_empty()
}

fn print_relay(label: &str, r: &Report) {
    println!("  {label:<22} {}", r.url);
    println!(
        "  {:<22} sent {}  delivered {}  in {:.3} s  =  {:.0} msg/s  one-way p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
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
            "  {:<22} duplicates {}  unexpected frames {}",
            "", r.duplicates, r.unexpected
        );
    }
}

/// Fan-out mode, as [`relay_mode`]; the ratio is between the medians of the per-update
/// all-received p50.
async fn fanout_mode(
    node: Option<&str>,
    baseline: &str,
    p: &Params,
    deadline: Instant,
    args: &Args,
) -> bool {
    let rounds = alternate(node, baseline, p, deadline, args.rounds, fanout_run).await;
    let p50 = |rs: &[FanoutReport]| median(rs.iter().map(|r| r.all_received.p50_us).collect());
    let p99 = |rs: &[FanoutReport]| median(rs.iter().map(|r| r.all_received.p99_us).collect());
    let p50_ratio = ratio(p50(&rounds.node), p50(&rounds.baseline));

    if !args.json_only() {
        let frame_bytes = rounds.baseline.first().map_or(0, |r| r.frame_bytes);
        println!(
            "fan-out: {} subscribers, {} updates one at a time, body.value {} B (frames of {frame_bytes} B), {} round(s)",
            p.subscribers, p.updates, p.size, args.rounds
        );
        for (is_node, reports) in [(true, &rounds.node), (false, &rounds.baseline)] {
            let label = side_label(is_node, args.self_test);
            for (i, r) in reports.iter().enumerate() {
                print_fanout(&round_label(label, i, args.rounds), r);
            }
            if args.rounds > 1 && !reports.is_empty() {
                println!(
                    "  {:<22} median all received: p50 {:.3} ms  p99 {:.3} ms",
                    label,
                    p50(reports).unwrap_or(0.0) / 1_000.0,
                    p99(reports).unwrap_or(0.0) / 1_000.0
                );
            }
        }
        if let Some(r) = p50_ratio {
            println!("fan-out all-received p50 ratio node/baseline = {r:.2}");
        }
    }
    let problems = problems(&rounds, FanoutReport::verify);
    if args.json.is_some() {
        let line = serde_json::json!({
            "mode": "fanout",
            "params": {
                "subscribers": p.subscribers, "updates": p.updates, "size": p.size,
                "domain": p.domain, "relay_threads": args.relay_threads, "rounds": args.rounds,
            },
            "node": rounds.node,
            "baseline": rounds.baseline,
            "node_median": { "all_received_p50_us": p50(&rounds.node),
                             "all_received_p99_us": p99(&rounds.node) },
            "baseline_median": { "all_received_p50_us": p50(&rounds.baseline),
                                 "all_received_p99_us": p99(&rounds.baseline) },
            "all_received_p50_ratio": p50_ratio,
            "self_test": args.self_test,
            "errors": problems,
            "ok": problems.is_empty(),
        });
        if let Err(e) = args.write_json(&line) {
            eprintln!("loadgen: {e}");
            return false;
        }
    }
    problems.is_empty()
}

fn print_fanout(label: &str, r: &FanoutReport) {
    let a = &r.all_received;
    let d = &r.per_delivery;
    println!("  {label:<22} {}", r.url);
    println!(
        "  {:<22} updates {}/{}  deliveries {}  all received: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  per delivery: p50 {:.1} µs  p99 {:.1} µs",
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
            "  {:<22} duplicates {}  unexpected frames {}",
            "", r.duplicates, r.unexpected
        );
    }
}
