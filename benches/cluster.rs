//! Cluster scale-out: nodes of one domain on the shared Redis, side by side in one run.
//!
//! Three `hyperty` node processes (`--cluster redis://127.0.0.1:6379`, one unique
//! key prefix per run). Measured one after the other, every message checked
//! delivered:
//!
//! * **relay 1→1**: one pair, both sessions on one node, against the two on
//!   different nodes (session → node A → Redis pub/sub → node B → session);
//! * **aggregate**: `--pairs` pairs on 1 node; then spread over 2 and 3 nodes, with
//!   both sessions of a pair on one node (no Redis hop), and with each pair's
//!   sender on node i and receiver on node i+1 (every message crosses Redis: the
//!   worst case a load balancer can deal);
//! * **fan-out**: one publisher, `--subscribers` subscribers on one node, against
//!   the same spread over three nodes (one publish per node and update).
//!
//! ```sh
//! cargo bench --bench cluster
//! cargo bench --bench cluster -- --pairs 6 --messages 20000 --subscribers 1000
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod load;

const DOMAIN: &str = "localhost";
const REDIS: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Parser)]
struct Args {
    /// Pairs of the aggregate runs (spread over the nodes).
    #[arg(long, default_value_t = 6)]
    pairs: usize,
    /// Messages per pair and run.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Messages in flight per pair.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Bytes of each message's body.value.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Subscribers of the fan-out runs.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Updates of the fan-out runs.
    #[arg(long, default_value_t = 100)]
    updates: u64,
    /// Criterion passes `--bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

struct Nodes(Vec<Child>, std::path::PathBuf);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start(n: usize, prefix: &str) -> Result<(Nodes, Vec<String>), String> {
    let home = std::env::temp_dir().join(prefix);
    let mut nodes = Nodes(Vec::new(), home.clone());
    let mut urls = Vec::new();
    for i in 0..n {
        let dir = home.join(format!("n{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let cfg = dir.join("node.toml");
        std::fs::write(
            &cfg,
            format!(
                "[node]\ndomain = \"{DOMAIN}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
                 [auth]\nmode = \"optional\"\n\
                 [limits]\nmessages_per_second = 100000000\nburst = 100000000\nmax_sessions_per_ip = 100000\nmax_sessions_per_user = 100000\n\
                 [identity]\ndata_dir = {:?}\n\
                 [cluster]\nprefix = \"{prefix}\"\nnode_id = \"n{i}\"\nheartbeat_ms = 500\n",
                dir.join("node").display().to_string(),
                dir.join("idp").display().to_string(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyperty"))
            .args(["--cluster", REDIS, "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the node: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        nodes.0.push(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        urls.push(url);
    }
    // every node sees all of them
    let deadline = Instant::now() + Duration::from_secs(20);
    for u in &urls {
        while members(u) < n {
            if Instant::now() > deadline {
                return Err(format!("{u} never saw {n} members"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok((nodes, urls))
}

/// Members the node at WebSocket URL `ws` shows on `/health`.
fn members(ws: &str) -> usize {
    let Some(host) = ws.strip_prefix("ws://").and_then(|r| r.strip_suffix("/ws")) else {
        return 0;
    };
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["cluster"]["members"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn params(a: &Args, pairs: usize) -> load::Params {
    load::Params {
        pairs,
        messages: a.messages,
        size: a.size,
        window: a.window,
        domain: DOMAIN.into(),
        subscribers: a.subscribers,
        updates: a.updates,
        ..load::Params::default()
    }
}

/// Pairs spread over `urls`: pair group i sends from node i to node i+1 (`cross`)
/// or to node i itself.
async fn aggregate(urls: &[String], cross: bool, a: &Args) -> Result<(f64, f64), String> {
    let n = urls.len();
    let per = (a.pairs / n).max(1);
    let runs = (0..n).map(|i| {
        let p = params(a, per);
        let from = urls[i].clone();
        let to = urls[if cross { (i + 1) % n } else { i }].clone();
        async move {
            let r = load::run_relay_between((&from, DOMAIN), (&to, DOMAIN), &p)
                .await
                .map_err(|e| e.to_string())?;
            r.verify().map_err(|e| e.to_string())?;
            Ok::<_, String>(r)
        }
    });
    let reports = futures_util::future::try_join_all(runs).await?;
    let delivered: u64 = reports.iter().map(|r| r.delivered).sum();
    let elapsed = reports.iter().map(|r| r.elapsed_s).fold(0.0, f64::max);
    let p50 = reports.iter().map(|r| r.latency.p50_us).fold(0.0, f64::max);
    Ok((delivered as f64 / elapsed.max(1e-9), p50))
}

async fn relay(from: &str, to: &str, a: &Args) -> Result<load::Report, String> {
    let r = load::run_relay_between((from, DOMAIN), (to, DOMAIN), &params(a, 1))
        .await
        .map_err(|e| e.to_string())?;
    r.verify().map_err(|e| e.to_string())?;
    Ok(r)
}

async fn fanout(publisher: &str, subs: &[&str], a: &Args) -> Result<load::FanoutReport, String> {
    let r = load::run_fanout_spread(publisher, subs, &params(a, 1))
        .await
        .map_err(|e| e.to_string())?;
    r.verify().map_err(|e| e.to_string())?;
    Ok(r)
}

async fn run(urls: &[String], a: &Args) -> Result<(), String> {
    let (u0, u1, u2) = (urls[0].as_str(), urls[1].as_str(), urls[2].as_str());
    println!("relay 1->1, {} messages, window {}:", a.messages, a.window);
    let same = relay(u0, u0, a).await?;
    let cross = relay(u0, u1, a).await?;
    println!(
        "  one node     {:>9.0} msg/s  p50 {:>7.0} us  p99 {:>7.0} us",
        same.msgs_per_sec, same.latency.p50_us, same.latency.p99_us
    );
    println!(
        "  two nodes    {:>9.0} msg/s  p50 {:>7.0} us  p99 {:>7.0} us",
        cross.msgs_per_sec, cross.latency.p50_us, cross.latency.p99_us
    );
    println!(
        "  cross/same   throughput {:.2}x  p50 {:.2}x",
        cross.msgs_per_sec / same.msgs_per_sec.max(1e-9),
        cross.latency.p50_us / same.latency.p50_us.max(1e-9)
    );
    println!("aggregate, {} pairs spread over the nodes:", a.pairs);
    let (base, p50) = aggregate(&urls[..1], false, a).await?;
    println!("  1 node                 {base:>9.0} msg/s  (p50 {p50:>7.0} us)");
    for n in 2..=3 {
        for (cross, how) in [
            (false, "pairs within a node"),
            (true, "pairs across nodes "),
        ] {
            let (rate, p50) = aggregate(&urls[..n], cross, a).await?;
            println!(
                "  {n} nodes, {how} {rate:>9.0} msg/s  (p50 {p50:>7.0} us)  {:.2}x of one node",
                rate / base.max(1e-9)
            );
        }
    }
    println!(
        "fan-out to {} subscribers, {} updates:",
        a.subscribers, a.updates
    );
    let one = fanout(u0, &[u0], a).await?;
    let three = fanout(u0, &[u0, u1, u2], a).await?;
    println!(
        "  one node     all-received p50 {:>8.0} us  p99 {:>8.0} us",
        one.all_received.p50_us, one.all_received.p99_us
    );
    println!(
        "  three nodes  all-received p50 {:>8.0} us  p99 {:>8.0} us",
        three.all_received.p50_us, three.all_received.p99_us
    );
    println!(
        "  three/one    p50 {:.2}x",
        three.all_received.p50_us / one.all_received.p50_us.max(1e-9)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let prefix = format!("bench-cluster-{}", std::process::id());
    let (_nodes, urls) = match start(3, &prefix) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(&urls, &args));
    // the nodes' entries expire; the membership records too
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
