//! Inter-domain relay against intra-domain relay, in one run.
//!
//! Two `hyperty` node processes, alpha.test and beta.test, federated (each finds the
//! other by discovery through `[federation] resolve`). Each round measures, one
//! after the other (alternating which goes first):
//!
//! * **intra**: sessions on alpha's node sending to sessions on alpha's node;
//! * **inter**: sessions on alpha's node sending to sessions on beta's node — session
//!   in A → node A → the peer link → node B → session in B.
//!
//! Reported per round and as medians: msgs/s (first send to last delivery, every
//! message checked delivered) and one-way latency p50/p99, and the ratios
//! inter/intra. Targets: throughput ≥ 0.5× and p50 ≤ 2× the intra-domain figures.
//!
//! ```sh
//! cargo bench --bench federation
//! cargo bench --bench federation -- --rounds 5 --pairs 2 --messages 50000
//! cargo bench --bench federation -- --json federation.json   # also as JSON, for the plots
//! ```

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Parser;

#[path = "loadgen/mod.rs"]
#[allow(dead_code, unused_imports)]
mod load;

#[derive(Debug, Parser)]
struct Args {
    /// Rounds (each measures intra and inter once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 2)]
    pairs: usize,
    /// Messages per pair and run.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Messages in flight per pair.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Bytes of each message's body.value.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Also write the rounds and medians as JSON to FILE (`scripts/plot_benchmarks.py`).
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
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

/// Starts the nodes of `domains`, each resolving the others; their WebSocket URLs.
fn start(domains: &[&str]) -> Result<(Nodes, Vec<String>), String> {
    let ports: Vec<u16> = domains
        .iter()
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let resolve: Vec<String> = domains
        .iter()
        .zip(&ports)
        .map(|(d, p)| format!("\"{d}\" = \"127.0.0.1:{p}\""))
        .collect();
    let dir = std::env::temp_dir().join(format!("hyperty-bench-fed-{}", std::process::id()));
    let mut nodes = Nodes(Vec::new(), dir.clone());
    let mut urls = Vec::new();
    for (d, port) in domains.iter().zip(&ports) {
        let home = dir.join(d);
        std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
        let cfg = home.join("node.toml");
        std::fs::write(
            &cfg,
            format!(
                "[node]\ndomain = \"{d}\"\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\ndata_dir = {:?}\n\
                 [auth]\nmode = \"optional\"\n\
                 [limits]\nmessages_per_second = 100000000\nburst = 100000000\n\
                 [identity]\ndata_dir = {:?}\n\
                 [federation]\nresolve = {{ {} }}\n",
                home.join("node").display().to_string(),
                home.join("idp").display().to_string(),
                resolve.join(", "),
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyperty"))
            .arg("--config")
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
    Ok((nodes, urls))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
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
    let (a, b) = ("alpha.test", "beta.test");
    let (_nodes, urls) = match start(&[a, b]) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let p = load::Params {
        pairs: args.pairs,
        messages: args.messages,
        window: args.window,
        size: args.size,
        time_limit: Duration::from_secs(300),
        stall: Duration::from_secs(10),
        ..load::Params::default()
    };
    // the first frame to beta discovers it and opens the link
    let warm = load::Params {
        pairs: 1,
        messages: 1_000,
        ..p.clone()
    };
    if let Err(e) = rt.block_on(load::run_relay_between((&urls[0], a), (&urls[1], b), &warm)) {
        eprintln!("warm-up: {e}");
        return ExitCode::FAILURE;
    }
    let mut ok = true;
    let mut runs = Vec::new();
    let (mut rates, mut p50s) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for round in 1..=args.rounds {
        let order: [bool; 2] = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for inter in order {
            let to = if inter { (&urls[1], b) } else { (&urls[0], a) };
            let label = if inter { "inter" } else { "intra" };
            match rt.block_on(load::run_relay_between((&urls[0], a), (to.0, to.1), &p)) {
                Ok(r) => {
                    println!(
                        "round {round} {label}: delivered {}/{}, {:.0} msg/s, one-way p50 {} µs, p99 {} µs, frames of {} B",
                        r.delivered, r.sent, r.msgs_per_sec, r.latency.p50_us, r.latency.p99_us, r.frame_bytes
                    );
                    ok &= r.verify().is_ok();
                    runs.push(serde_json::json!({"round": round, "side": label, "report": r}));
                    let (rv, pv) = if inter {
                        (&mut rates.1, &mut p50s.1)
                    } else {
                        (&mut rates.0, &mut p50s.0)
                    };
                    rv.push(r.msgs_per_sec);
                    pv.push(r.latency.p50_us);
                }
                Err(e) => {
                    println!("round {round} {label}: failed: {e}");
                    ok = false;
                }
            }
        }
    }
    let (ri, rx) = (median(rates.0), median(rates.1));
    let (pi, px) = (median(p50s.0), median(p50s.1));
    println!(
        "medians: intra {ri:.0} msg/s p50 {pi:.0} µs; inter {rx:.0} msg/s p50 {px:.0} µs; \
         throughput inter/intra {:.2}× (target ≥ 0.5×), p50 inter/intra {:.2}× (target ≤ 2×)",
        rx / ri.max(1.0),
        px / pi.max(1.0)
    );
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "bench": "federation",
            "params": {"pairs": p.pairs, "messages": p.messages, "window": p.window,
                "size": p.size, "rounds": args.rounds},
            "runs": runs,
            "medians": {
                "intra": {"msgs_per_sec": ri, "p50_us": pi},
                "inter": {"msgs_per_sec": rx, "p50_us": px},
            },
            "ok": ok,
        });
        if let Err(e) = std::fs::write(path, format!("{doc}\n")) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
