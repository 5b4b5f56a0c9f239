//! Every example in `examples/` runs as a real process: it ends by itself, exits 0
//! and prints the line that shows it did its job.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest an example may run before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(60);

/// Each example, the arguments that make it end by itself, and the pieces one
/// line of its output must contain.
const EXAMPLES: &[(&str, &[&str], &[&str])] = &[
    (
        "hello",
        &[],
        &["Alice received:", r#""code":200"#, "Hello, "],
    ),
    (
        "two_runtimes",
        &[],
        &[
            "[runtime A] received:",
            r#""type":"response""#,
            r#""code":200"#,
        ],
    ),
    ("events", &[], &["same id as published: true"]),
    (
        "h2h_call",
        &[],
        &[
            "call ended:",
            r#"alice's object "ended""#,
            r#"bob's object "ended""#,
            "both deleted",
        ],
    ),
    ("m2m", &[], &["application saw", "readings", "no gap"]),
    (
        "embedded_server",
        &["--once"],
        &["GET /hello -> 200 OK hello from the application"],
    ),
    (
        "protofly",
        &[],
        &[
            "6. [domain A] received:",
            r#""code":200"#,
            "hello from b.example",
        ],
    ),
    // three `hyperty` node processes, one per domain
    (
        "federation",
        &["--once"],
        &["federation scenario complete: 3 domains, 3 nodes"],
    ),
];

/// `target/<profile>/examples`, with every example (and the `hyperty` binary the
/// federation example starts) built, once per test run.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // this test runs from target/<profile>/deps/
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let profile = profile_dir
            .file_name()
            .and_then(|p| p.to_str())
            .expect("profile name");
        let target = profile_dir.parent().expect("target dir");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--examples", "--bins", "--target-dir"])
            .arg(target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build --examples: {status}");
        profile_dir.join("examples")
    })
}

/// Runs an example to its end; its exit status and standard output.
fn run(name: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let path = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    // read while it runs, so a full pipe cannot stall it
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} did not end within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("reader"))
}

fn check(name: &str) {
    let (_, args, pieces) = EXAMPLES
        .iter()
        .find(|(n, _, _)| *n == name)
        .expect("listed example");
    let (status, out) = run(name, args);
    assert!(
        status.success(),
        "example {name} exited with {status}:\n{out}"
    );
    assert!(
        out.lines().any(|l| pieces.iter().all(|p| l.contains(p))),
        "example {name}: no line with all of {pieces:?} in:\n{out}"
    );
}

#[test]
fn hello() {
    check("hello");
}

#[test]
fn two_runtimes() {
    check("two_runtimes");
}

#[test]
fn events() {
    check("events");
}

#[test]
fn h2h_call() {
    check("h2h_call");
}

#[test]
fn m2m() {
    check("m2m");
}

/// Also: the application's `/metrics` carries the node's series and its
/// runtime's bus.
#[test]
fn protofly() {
    check("protofly");
}

#[test]
fn embedded_server() {
    let (status, out) = run("embedded_server", &["--once"]);
    assert!(
        status.success(),
        "embedded_server exited with {status}:\n{out}"
    );
    for line in [
        "GET /hello -> 200 OK hello from the application",
        "GET /metrics -> 200 OK: node series true, runtime bus series true",
    ] {
        assert!(
            out.lines().any(|l| l.contains(line)),
            "no {line:?} in:\n{out}"
        );
    }
}

#[test]
fn federation() {
    let (status, out) = run("federation", &["--once"]);
    assert!(status.success(), "federation exited with {status}:\n{out}");
    for piece in [
        "bob    <- 200 \"hi from carol\"",
        "alice  sees bob is \"busy\"",
        "carol  got \"lunch at noon?\" (same id: true, bcc it sees: 1)",
        "bob    got \"lunch at noon?\" (same id: true, bcc it sees: 0)",
        "alice  delivery notification: delivered to hyperty://beta.test/",
        "alice  reports connection://alpha.test/",
        "bob    observes the offer: \"v=0 o=alice",
        "alice  observes bob's answer in connection://beta.test/",
        "both   see each other's ICE candidate (1 and 1 children)",
        "both   see the call \"connected\"",
        "both   see the call \"ended\"",
        "both   connection objects deleted: the call is over",
        "alice  found user://beta.test/bob: 200 -> hyperty://beta.test/",
        "federation scenario complete: 3 domains, 3 nodes",
    ] {
        assert!(out.contains(piece), "no {piece:?} in:\n{out}");
    }
}

#[test]
fn every_example_is_run_here() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            // a file example, or a directory one (`<name>/main.rs`)
            match name.strip_suffix(".rs") {
                Some(n) => Some(n.to_owned()),
                None => e.path().join("main.rs").exists().then_some(name),
            }
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|(n, _, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "add new examples to EXAMPLES (and a test)");
}
