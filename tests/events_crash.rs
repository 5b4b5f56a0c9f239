//! Real crashes: a receiver with a durable event cache in a child process gets a
//! burst of numbered delivery-wanted events from a sender runtime in this process,
//! through a real `hyperty` node process; the receiver (scenario A) or the node
//! (scenario B) is killed with SIGKILL mid-burst and restarted. Every event
//! reaches the receiving application exactly once.
//!
//! The receiver is this test binary run again as the `receiver_child` test with
//! [`CHILD_URL`] set (without it, that test does nothing). It prints `ready` once
//! attached, and `received <n>` for each event its listener gets. Its entity is
//! durable and never acknowledges, so each incarnation first gets again everything
//! it had stored: an incarnation that sees a number twice, or a last incarnation
//! missing one, fails the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

const D: &str = "crash.test";
const N: usize = 2000;
/// Environment: the node URL; set only for the child role.
const CHILD_URL: &str = "HYPERTY_TEST_RECEIVER_URL";
/// Environment: the child's cache database.
const CHILD_DB: &str = "HYPERTY_TEST_RECEIVER_DB";
const RECEIVER: &str = "hyperty-runtime://crash.test/receiver/inbox";
const SENDER: &str = "hyperty-runtime://crash.test/sender/app";
/// Upper bound of any wait in these tests.
const DEADLINE: Duration = Duration::from_secs(60);

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

fn bridge(url: &str) -> BridgeConfig {
    let mut b = BridgeConfig::new(url);
    b.reconnect_max = Duration::from_millis(200);
    b
}

/// The receiver role (see the module docs).
#[test]
fn receiver_child() {
    let (Ok(url), Ok(db)) = (std::env::var(CHILD_URL), std::env::var(CHILD_DB)) else {
        return;
    };
    // the test harness may have left a line unfinished
    println!();
    actix::System::new().block_on(async move {
        let mut cfg = RuntimeConfig::new(D);
        cfg.runtime_id = Some("receiver".into());
        cfg.events.cache.path = Some(PathBuf::from(db));
        let rt = Runtime::start(cfg).unwrap();
        let me = addr(RECEIVER);
        let ep = rt.events().endpoint(me.clone());
        ep.register_entity_with(me.clone(), EntityOptions::durable())
            .await
            .unwrap();
        let (listener, mut inbox) = EventInbox::start();
        ep.add_listener(ListenerFilter::any().destination(me), listener)
            .await
            .unwrap();
        // refused while a restarted node is not listening yet: the bridge keeps
        // trying by itself
        if let Err(e) = rt.attach_node(bridge(&url)).await {
            eprintln!("attach: {e}");
        }
        println!("ready");
        loop {
            if let Some(e) = inbox.recv(DEADLINE).await {
                println!("received {}", e.event.payload().unwrap_or("?"));
            }
        }
    });
}

/// A child process whose stdout lines arrive on a channel; killed when dropped.
struct Proc {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    /// Runs `cmd`, its stderr appended to `log`.
    fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// The next line before the deadline; `None` at end of output or deadline.
    async fn line(&mut self, deadline: Instant) -> Option<String> {
        tokio::time::timeout_at(deadline, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `hyperty` node on `port` (0: any); `None` if it did not start listening.
/// Its defaults hold: a restarted receiver's `open` replaces the killed
/// incarnation's session, still in its grace period, and takes over what it had
/// buffered.
async fn node(dir: &Path, port: u16) -> Option<(Proc, u16)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hyperty"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--domain", D])
        .args(["--auth", "optional"])
        .current_dir(dir)
        .env("RUST_LOG", "warn");
    let mut p = Proc::spawn(cmd, &dir.join("node.log"));
    let line = p.line(Instant::now() + DEADLINE).await?;
    let port = line
        .strip_prefix("listening on ws://127.0.0.1:")
        .and_then(|l| l.strip_suffix("/ws"))
        .and_then(|p| p.parse().ok())?;
    Some((p, port))
}

/// A node restarted on `port`, retried until the port is free again.
async fn node_on(dir: &Path, port: u16) -> Proc {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some((p, _)) = node(dir, port).await {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not restart on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One receiver incarnation, read up to `ready`.
struct Receiver {
    proc: Proc,
    /// How many times each number was received.
    got: BTreeMap<usize, usize>,
}

impl Receiver {
    async fn start(url: &str, db: &Path) -> Receiver {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "receiver_child", "--nocapture"])
            .env(CHILD_URL, url)
            .env(CHILD_DB, db);
        let log = db.with_extension("log");
        let mut r = Receiver {
            proc: Proc::spawn(cmd, &log),
            got: BTreeMap::new(),
        };
        let ready = r
            .read_until(Instant::now() + DEADLINE, |l, _| l == "ready")
            .await;
        assert!(
            ready,
            "the receiver did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        r
    }

    /// Reads lines until `stop` holds (true), the output ends or the deadline.
    async fn read_until(
        &mut self,
        deadline: Instant,
        mut stop: impl FnMut(&str, &BTreeMap<usize, usize>) -> bool,
    ) -> bool {
        while let Some(line) = self.proc.line(deadline).await {
            if let Some(n) = line.strip_prefix("received ") {
                let n: usize = n.parse().expect("a number");
                *self.got.entry(n).or_default() += 1;
            }
            if stop(&line, &self.got) {
                return true;
            }
        }
        false
    }

    /// Kills the process and reads what it printed before dying.
    async fn kill(mut self) -> BTreeMap<usize, usize> {
        self.proc.kill();
        self.read_until(Instant::now() + DEADLINE, |_, _| false)
            .await;
        self.got
    }
}

/// The sender runtime in this process: a durable cache and quick retransmission.
async fn sender(url: &str, dir: &Path) -> (RuntimeHandle, EventEndpoint) {
    let mut cfg = RuntimeConfig::new(D);
    cfg.runtime_id = Some("sender".into());
    cfg.events.cache.path = Some(dir.join("sender.redb"));
    cfg.events.cache.ack_timeout = Duration::from_secs(2);
    cfg.events.cache.retry_base = Duration::from_millis(100);
    cfg.events.cache.retry_max = Duration::from_secs(2);
    cfg.events.tick_interval = Some(Duration::from_millis(50));
    let rt = Runtime::start(cfg).unwrap();
    let ep = rt.events().endpoint(addr(SENDER));
    ep.register_entity(addr(SENDER)).await.unwrap();
    rt.attach_node(bridge(url)).await.unwrap();
    (rt, ep)
}

/// Dispatches 1..=N to the receiver at once; returns the reports' receiver.
async fn burst(ep: &EventEndpoint) -> ReportReceiver {
    let (callbacks, reports) = EventCallbacks::channel(CallbackSet::delivery());
    let sends = (1..=N).map(|n| {
        let ev = ep
            .builder("numbered", addr(SENDER))
            .to(addr(RECEIVER))
            .payload(n.to_string())
            .build()
            .unwrap();
        ep.dispatch(ev, Some(callbacks.clone()), None)
    });
    for r in futures_util::future::join_all(sends).await {
        r.unwrap();
    }
    reports
}

/// Waits for one `onDelivery` per number; fails on any `onError`.
async fn all_delivered(reports: &mut ReportReceiver) {
    let deadline = Instant::now() + DEADLINE;
    let mut delivered = BTreeMap::new();
    while delivered.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = reports
            .recv(left)
            .await
            .unwrap_or_else(|| panic!("{} of {N} confirmed", delivered.len()));
        let n: usize = r.event.payload().unwrap().parse().unwrap();
        match r.kind {
            ReportKind::Delivery { .. } => {
                *delivered.entry(n).or_insert(0) += 1;
            }
            other => panic!("event {n}: {other:?}"),
        }
    }
    assert!(delivered.values().all(|&c| c == 1), "one onDelivery each");
}

/// Polls until the sender's cache holds nothing: no retransmission is left.
async fn sender_settled(rt: &RuntimeHandle) {
    let deadline = Instant::now() + DEADLINE;
    while rt.events().cached().await != 0 {
        assert!(
            Instant::now() < deadline,
            "the sender's cache never emptied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lost and duplicated numbers of one incarnation; `complete` if it must hold all.
fn verdict(got: &BTreeMap<usize, usize>, complete: bool) -> (usize, usize) {
    let twice = got.values().map(|&c| c.saturating_sub(1)).sum();
    let lost = if complete {
        (1..=N).filter(|n| !got.contains_key(n)).count()
    } else {
        0
    };
    assert!(got.keys().all(|n| (1..=N).contains(n)), "unknown numbers");
    (lost, twice)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hyperty-crash-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where to kill: early in the burst, moved a little per run.
fn kill_point() -> usize {
    N / 20 + (uuid::Uuid::new_v4().as_u128() % (N as u128 / 10)) as usize
}

#[actix::test]
async fn a_receiver_killed_mid_burst_loses_nothing_and_gets_nothing_twice() {
    let dir = temp_dir("receiver");
    let db = dir.join("receiver.redb");
    let (_node, port) = node(&dir, 0).await.expect("the node starts");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut first = Receiver::start(&url, &db).await;
    let (rt, ep) = sender(&url, &dir).await;
    let at = kill_point();
    let mut reports = burst(&ep).await;
    let reached = first
        .read_until(Instant::now() + DEADLINE, |_, got| got.len() >= at)
        .await;
    assert!(reached, "the receiver got {} events", first.got.len());
    let first = first.kill().await;
    let mut second = Receiver::start(&url, &db).await;
    all_delivered(&mut reports).await;
    sender_settled(&rt).await;
    second
        .read_until(Instant::now() + DEADLINE, |_, got| got.len() >= N)
        .await;
    let second = second.kill().await;
    let (_, twice_first) = verdict(&first, false);
    let (lost, twice_second) = verdict(&second, true);
    eprintln!(
        "receiver killed after {} of {N}: lost {lost}, delivered twice {}, retransmitted {}",
        first.len(),
        twice_first + twice_second,
        rt.events().stats().await.retransmitted
    );
    assert_eq!((lost, twice_first + twice_second), (0, 0));
    assert!(first.len() >= at && first.len() < N, "killed mid-burst");
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix::test]
async fn a_node_killed_mid_burst_and_restarted_on_its_port_loses_nothing() {
    let dir = temp_dir("node");
    let db = dir.join("receiver.redb");
    let (mut node1, port) = node(&dir, 0).await.expect("the node starts");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut receiver = Receiver::start(&url, &db).await;
    let (rt, ep) = sender(&url, &dir).await;
    let at = kill_point();
    let mut reports = burst(&ep).await;
    let reached = receiver
        .read_until(Instant::now() + DEADLINE, |_, got| got.len() >= at)
        .await;
    assert!(reached, "the receiver got {} events", receiver.got.len());
    node1.kill();
    let before = receiver.got.len();
    let _node2 = node_on(&dir, port).await;
    all_delivered(&mut reports).await;
    sender_settled(&rt).await;
    receiver
        .read_until(Instant::now() + DEADLINE, |_, got| got.len() >= N)
        .await;
    let got = receiver.kill().await;
    let (lost, twice) = verdict(&got, true);
    eprintln!(
        "node killed after {before} of {N}: lost {lost}, delivered twice {twice}, retransmitted {}",
        rt.events().stats().await.retransmitted
    );
    assert_eq!((lost, twice), (0, 0));
    assert!(before < N, "killed mid-burst");
    let _ = std::fs::remove_dir_all(&dir);
}
