//! Memory and delivery under hostile or bursty clients, against a real node process.
//!
//! Starts the `hyperty` binary (as built for this bench) on 127.0.0.1:0 and samples its
//! resident memory (`/proc/<pid>/status`, `VmRSS` every 10 ms and `VmHWM` at the end)
//! while it runs two scenarios:
//!
//! 1. **Pre-open flood** (default configuration, `auth = required`): one client that
//!    never opens a session writes frames as fast as it can for up to `--flood-secs`
//!    while reading everything that comes back. Reported: frames written, refusals
//!    read, whether and when the node disconnected it, and the node's peak RSS.
//! 2. **1→1 burst**: one sender writes `--burst` frames of about 235 bytes to one
//!    receiver with no window (all in flight at once) while the receiver reads as fast
//!    as it can; rate limits raised so that only flow control is measured. Reported:
//!    delivered/sent, messages/s, the node's peak RSS; and the same burst through the
//!    in-process baseline relay (a minimal tokio-tungstenite relay, the transport limit)
//!    for the throughput ratio.
//!
//! ```sh
//! cargo bench --bench hardening
//! cargo bench --bench hardening -- --burst 200000 --rounds 3 --flood-secs 3
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Ws;

#[path = "loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod load;

#[derive(Debug, Parser)]
struct Args {
    /// Frames in the 1→1 burst.
    #[arg(long, default_value_t = 200_000)]
    burst: u64,
    /// Burst rounds against the node (each followed by one against the baseline).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Longest pre-open flood.
    #[arg(long, default_value_t = 3)]
    flood_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A node process and its memory sampler.
struct Node {
    child: Child,
    url: String,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Node {
    fn start(config: &str) -> Result<Node, String> {
        let dir = std::env::temp_dir().join(format!("hyperty-hardening-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let cfg = dir.join("node.toml");
        let data = dir.join("idp");
        std::fs::write(
            &cfg,
            format!(
                "{config}\n[identity]\ndata_dir = {:?}\n",
                data.display().to_string()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyperty"))
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the node: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (pid, peak, halt) = (child.id(), peak_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(rss, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Ok(Node {
            child,
            url,
            peak_kib,
            stop,
            _dir: TempDir(dir),
        })
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:").unwrap_or(0)
    }

    fn hwm_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
            .unwrap_or(0)
            .max(self.peak_kib.load(Relaxed))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn pre_open_flood(url: &str, limit: Duration) -> (u64, u64, Option<Duration>) {
    let (ws, _) = match tokio_tungstenite::connect_async_with_config(url, None, true).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("connect: {e}");
            return (0, 0, None);
        }
    };
    let (mut sink, mut stream) = ws.split();
    let frame = r#"{"id":1,"type":"update","from":"runtime://localhost/flood","to":"runtime://localhost/victim","body":{"value":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let writer = tokio::spawn(async move {
        let mut written = 0u64;
        while !d.load(Relaxed) && start.elapsed() < limit {
            for _ in 0..256 {
                if sink.feed(Ws::Text(frame.into())).await.is_err() {
                    return written;
                }
                written += 1;
            }
            if sink.flush().await.is_err() {
                return written;
            }
        }
        written
    });
    let mut read = 0u64;
    let mut closed = None;
    while start.elapsed() < limit + Duration::from_secs(1) {
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(Ok(Ws::Text(_)))) => read += 1,
            Ok(Some(Ok(Ws::Close(_))) | Some(Err(_)) | None) => {
                closed = Some(start.elapsed());
                break;
            }
            Ok(Some(Ok(_))) | Err(_) => {}
        }
    }
    done.store(true, Relaxed);
    let written = writer.await.unwrap_or(0);
    (written, read, closed)
}

fn burst_params(n: u64) -> load::Params {
    load::Params {
        pairs: 1,
        messages: n,
        size: 100,
        window: n,
        time_limit: Duration::from_secs(120),
        stall: Duration::from_secs(10),
        ..load::Params::default()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    let mut ok = true;

    // 1. pre-open flood: against the defaults, and with the abuse limit out of the way
    //    (then only backpressure bounds the node's memory)
    for (label, config) in [
        ("defaults", ""),
        ("no abuse limit", "[limits]\nabuse_threshold = 4000000000\n"),
    ] {
        let node = match Node::start(config) {
            Ok(node) => node,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let idle = node.rss_kib();
        let (written, read, closed) = rt.block_on(pre_open_flood(
            &node.url,
            Duration::from_secs(args.flood_secs),
        ));
        std::thread::sleep(Duration::from_millis(200));
        println!(
            "pre-open flood ({label}): {written} frames written, {read} refusals read, {}; node RSS idle {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
            closed.map_or("never disconnected".to_owned(), |t| format!("disconnected after {} ms", t.as_millis())),
            mib(idle),
            mib(node.hwm_kib()),
            mib(node.rss_kib()),
        );
        if config.is_empty() {
            ok &= closed.is_some();
        }
    }

    // 2. 1→1 burst, node against the baseline relay
    let limits = "[auth]\nmode = \"optional\"\n[limits]\nmessages_per_second = 100000000\nburst = 100000000\n";
    let p = burst_params(args.burst);
    let (base_url, _relay) = match rt.block_on(load::start_baseline_relay()) {
        Ok((addr, h)) => (format!("ws://{addr}/ws"), h),
        Err(e) => {
            eprintln!("baseline: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut node_rates, mut base_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let node = match Node::start(limits) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let idle = node.rss_kib();
        match rt.block_on(load::run_relay_load(&node.url, &p)) {
            Ok(r) => {
                println!(
                    "burst round {round}: node delivered {}/{} ({:.1} %), {:.0} msg/s, frames of {} B, node RSS idle {:.1} MiB, peak {:.1} MiB{}",
                    r.delivered,
                    r.sent,
                    100.0 * r.delivered as f64 / r.sent.max(1) as f64,
                    r.msgs_per_sec,
                    r.frame_bytes,
                    mib(idle),
                    mib(node.hwm_kib()),
                    r.stopped.as_deref().map(|s| format!(" (stopped: {s})")).unwrap_or_default(),
                );
                ok &= r.delivered == r.sent;
                node_rates.push(r.msgs_per_sec);
            }
            Err(e) => {
                println!("burst round {round}: node failed: {e}");
                ok = false;
            }
        }
        match rt.block_on(load::run_relay_load(&base_url, &p)) {
            Ok(r) => {
                println!(
                    "burst round {round}: baseline delivered {}/{}, {:.0} msg/s",
                    r.delivered, r.sent, r.msgs_per_sec
                );
                base_rates.push(r.msgs_per_sec);
            }
            Err(e) => println!("burst round {round}: baseline failed: {e}"),
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    if let (Some(n), Some(b)) = (median(node_rates), median(base_rates)) {
        println!(
            "burst medians: node {n:.0} msg/s, baseline {b:.0} msg/s, node/baseline {:.2}",
            n / b
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
