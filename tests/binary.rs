//! The `hyperty` binary: the startup line contract, flags, config errors, signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The binary, run in a directory of its own: the default `data/idp` store is
/// locked by the node using it, so two nodes never share one.
fn bin() -> Command {
    let dir = std::env::temp_dir().join(format!(
        "hyperty-binary-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a working directory");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hyperty"));
    cmd.current_dir(dir);
    cmd
}

static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn prints_exactly_the_listening_line_and_stops_on_sigterm() {
    let mut child = bin()
        .args(["--listen", "127.0.0.1:0", "--domain", "bin.test"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .strip_prefix("listening on ws://127.0.0.1:")
        .and_then(|l| l.strip_suffix("/ws\n"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port: u16 = url.parse().expect("a real port");
    assert_ne!(port, 0);
    // /health answers on that port
    let health = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(health.is_ok());
    // SIGTERM: graceful exit 0, nothing more on stdout
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "");
}

#[test]
fn print_config_shows_the_commented_defaults_or_the_effective_tree() {
    let out = bin().arg("--print-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("# hyperty messaging node"));
    assert_eq!(
        hyperty::config::NodeConfig::from_toml(&text).unwrap(),
        hyperty::config::NodeConfig::default()
    );
    let out = bin()
        .args(["--print-config", "--domain", "x.org"])
        .env("HYPERTY_LISTEN", "127.0.0.1:7000")
        .output()
        .unwrap();
    let cfg =
        hyperty::config::NodeConfig::from_toml(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(cfg.node.domain, "x.org");
    assert_eq!(cfg.node.listen.port(), 7000);
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("hyperty-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[session]\nmax_frame_size = 3\n").unwrap();
    let out = bin().arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("session.max_frame_size"), "{err}");
    let out = bin().args(["--domain", "bad domain"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["--config", "/nonexistent/hyperty.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("cannot read"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_taken_port_is_reported_not_panicked() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = bin()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("cannot listen"));
}

#[test]
fn event_id_reads_events_line_by_line() {
    use std::io::Write;
    let mut child = bin()
        .arg("event-id")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = concat!(
        r#"{"type":"chat","source":"hyperty://a.org/1","to":["hyperty://b.org/2"],"payload":"hi","addressingSensitive":true}"#,
        "\n",
        r#"{"type":"9bad","source":"x","to":["y"],"addressingSensitive":false}"#,
        "\n",
        "not json\n"
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0].len(), 64);
    assert!(lines[0]
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert!(lines[1].starts_with("invalid: "), "{}", lines[1]);
    assert!(lines[2].starts_with("invalid: "));
}
