//! `scripts/plot_benchmarks.py` run as a real process on small bench results
//! (`tests/fixtures/bench/`): it writes well-formed SVG plots with titles and
//! descriptions, escapes the text it takes from the files, and refuses a file
//! that is no bench result.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory for one test's plots.
fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyperty-plots-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn plot(out: &Path, files: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg(root().join("scripts/plot_benchmarks.py"))
        .arg("--out")
        .arg(out)
        .args(
            files
                .iter()
                .map(|f| root().join("tests/fixtures/bench").join(f)),
        )
        .output()
        .expect("python3 runs")
}

#[test]
fn plots_are_well_formed_svg_with_the_results() {
    let out = out_dir("all");
    let run = plot(
        &out,
        &[
            "relay.json",
            "fanout.json",
            "federation.json",
            "syncher.json",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let svgs = ["relay.svg", "latency.svg", "fanout.svg"].map(|n| out.join(n));
    // well-formed XML, checked by a real parser
    let parse = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             for f in sys.argv[1:]:\n    \
                 r = E.parse(f).getroot()\n    \
                 assert r.tag == '{http://www.w3.org/2000/svg}svg', r.tag",
        ])
        .args(&svgs)
        .output()
        .expect("python3 runs");
    assert!(
        parse.status.success(),
        "{}",
        String::from_utf8_lossy(&parse.stderr)
    );
    let relay = std::fs::read_to_string(&svgs[0]).unwrap();
    assert!(relay.contains("<title id=\"title\">Relay throughput</title>"));
    assert!(relay.contains("<desc id=\"desc\">"));
    assert!(
        relay.contains("253.0 K/s") && relay.contains("412.0 K/s"),
        "{relay}"
    );
    assert!(relay.contains("inter-domain (A → B)") && relay.contains("138.0 K/s"));
    assert!(relay.contains("95.5 K/s"), "the Syncher's throughput");
    // text from the files is escaped, never markup
    assert!(relay.contains("&lt;2 &amp; more&gt;"), "{relay}");
    assert!(!relay.contains("<2 & more>"));
    let latency = std::fs::read_to_string(&svgs[1]).unwrap();
    assert!(
        latency.contains("897.0 µs") && latency.contains("2.20 ms"),
        "{latency}"
    );
    let fanout = std::fs::read_to_string(&svgs[2]).unwrap();
    assert!(
        fanout.contains("14.80 ms") && fanout.contains("18.90 ms"),
        "{fanout}"
    );
    assert!(fanout.contains("Syncher p50") && fanout.contains("654.0 µs"));
    assert!(fanout.contains("raw /sm fan-out to 1000 sessions p50") && fanout.contains("14.10 ms"));
    assert!(fanout.contains("raw /sm fan-out to 20 sessions p99") && fanout.contains("347.0 µs"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_file_that_is_no_bench_result_is_refused() {
    let out = out_dir("bad");
    let run = Command::new("python3")
        .arg(root().join("scripts/plot_benchmarks.py"))
        .arg("--out")
        .arg(&out)
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("python3 runs");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("Cargo.toml"),
        "names the file"
    );
    assert!(!out.join("relay.svg").exists());
}
