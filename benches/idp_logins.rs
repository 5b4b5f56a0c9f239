//! Memory and fairness of a node's identity provider under wrong-password floods.
//!
//! Starts the `hyperty` binary (or the one named by `HYPERTY_BIN`) on 127.0.0.1:0
//! with the default Argon2id parameters (19 MiB per hash) and a fresh data
//! directory, registers `alice`, and runs two floods over real HTTP
//! (`POST /idp/login`), reading the node's `VmRSS` / `VmHWM` from
//! `/proc/<pid>/status`:
//!
//! 1. **hash flood**: `WAVES` waves of `CONCURRENCY` concurrent wrong-password
//!    logins, each from its own loopback source address (`127.1.x.y`) and for its
//!    own user name, so no login throttle applies and every request costs one
//!    Argon2 hash (unknown users get a decoy hash of the same cost). Reported: the
//!    answer codes, peak RSS during the flood and RSS two seconds after it.
//! 2. **account flood**: the same number of wrong-password logins for `alice`,
//!    all from `127.0.0.2`, while the real user logs in with the right password
//!    from `127.0.0.3` once per wave. Reported: the flood's answer codes and how
//!    many of the real user's logins succeeded.
//!
//! ```sh
//! cargo bench --bench idp_logins
//! HYPERTY_BIN=path/to/other/hyperty cargo bench --bench idp_logins
//! ```
//!
//! Linux only (loopback source addresses and `/proc`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONCURRENCY: usize = 64;
const WAVES: usize = 8;
const PASSWORD: &str = "correct horse battery";

fn main() {
    if !cfg!(target_os = "linux") {
        println!("idp_logins: needs Linux (/proc and loopback source addresses); skipped");
        return;
    }
    // `cargo bench` passes `--bench`; nothing to parse
    let bin = std::env::var("HYPERTY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hyperty").into());
    let dir = std::env::temp_dir().join(format!("hyperty-idp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("node.toml");
    let data = dir.join("idp");
    std::fs::write(
        &config,
        format!(
            "[node]\ndomain = \"bench.test\"\nworkers = 2\n\n[identity]\ndata_dir = {:?}\n",
            data.display().to_string()
        ),
    )
    .expect("config");
    let (mut child, addr) = spawn(&bin, &config);
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let body = format!(r#"{{"username":"alice","password":"{PASSWORD}"}}"#);
        let (code, _) = post(addr, local, "/idp/users", &body).await;
        assert_eq!(code, 201, "alice registers");
        println!("binary: {bin}");
        println!(
            "idle:          VmRSS {:>6} KiB  VmHWM {:>6} KiB",
            status(pid, "VmRSS"),
            status(pid, "VmHWM")
        );

        let peak = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn(sample(pid, peak.clone()));
        let started = Instant::now();
        let mut codes = BTreeMap::new();
        for wave in 0..WAVES {
            let mut tasks = Vec::with_capacity(CONCURRENCY);
            for i in 0..CONCURRENCY {
                let n = wave * CONCURRENCY + i;
                let source =
                    IpAddr::V4(Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250) as u8 + 2));
                let body = format!(r#"{{"username":"user{n}","password":"wrong password {n}"}}"#);
                tasks.push(tokio::spawn(async move {
                    post(addr, source, "/idp/login", &body).await.0
                }));
            }
            for t in tasks {
                *codes.entry(t.await.unwrap_or(0)).or_insert(0) += 1;
            }
        }
        let took = started.elapsed();
        sampler.abort();
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "hash flood:    {} logins in {:.1} s, answers {codes:?}",
            WAVES * CONCURRENCY,
            took.as_secs_f64()
        );
        println!(
            "               peak VmRSS {:>6} KiB  VmHWM {:>6} KiB  VmRSS 2 s later {:>6} KiB",
            peak.load(Ordering::Relaxed),
            status(pid, "VmHWM"),
            status(pid, "VmRSS")
        );

        let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let user = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        let mut codes = BTreeMap::new();
        let mut real_ok = 0;
        for _ in 0..WAVES {
            let mut tasks = Vec::with_capacity(CONCURRENCY);
            for i in 0..CONCURRENCY {
                let body = format!(r#"{{"username":"alice","password":"guess {i}"}}"#);
                tasks.push(tokio::spawn(async move {
                    post(addr, attacker, "/idp/login", &body).await.0
                }));
            }
            let body = format!(r#"{{"username":"alice","password":"{PASSWORD}"}}"#);
            if post(addr, user, "/idp/login", &body).await.0 == 200 {
                real_ok += 1;
            }
            for t in tasks {
                *codes.entry(t.await.unwrap_or(0)).or_insert(0) += 1;
            }
        }
        println!(
            "account flood: {} guesses for alice from one source, answers {codes:?}; \
             the real user from another source logged in {real_ok} of {WAVES} times",
            WAVES * CONCURRENCY
        );
        println!(
            "               VmRSS {:>6} KiB  VmHWM {:>6} KiB",
            status(pid, "VmRSS"),
            status(pid, "VmHWM")
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts the node and reads its `listening on ws://…` line.
fn spawn(bin: &str, config: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--auth", "optional"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the hyperty binary");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let addr = line
        .trim()
        .strip_prefix("listening on ws://")
        .and_then(|l| l.strip_suffix("/ws"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, addr)
}

/// One `POST` from `source`: the status code and the body.
async fn post(to: SocketAddr, source: IpAddr, path: &str, body: &str) -> (u16, String) {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let mut s = socket.connect(to).await?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(120), attempt).await {
        Ok(Ok(text)) => {
            let code = text
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map(|b| b.1.to_owned());
            (code, body.unwrap_or_default())
        }
        _ => (0, String::new()),
    }
}

/// A field of `/proc/<pid>/status`, KiB.
fn status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Keeps the largest `VmRSS` seen in `peak`.
async fn sample(pid: u32, peak: Arc<AtomicU64>) {
    loop {
        peak.fetch_max(status(pid, "VmRSS"), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
