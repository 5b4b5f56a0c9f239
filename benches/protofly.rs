//! Protocol on the fly: what a downloaded stub costs, in one run.
//!
//! One messaging node of b.test serves its catalogue (the raw-WebSocket JS stub,
//! `examples/protofly/raw_stub.js`); a runtime of b.test attached through the
//! built-in bridge hosts an echo hyperty. Measured, in process:
//!
//! * **first message**: a fresh runtime of a.test (with its user agent) sends a
//!   request to the echo hyperty; the bus finds no stub for b.test, so the first
//!   message waits for the stub to be fetched, its signature and hash checked,
//!   its sandbox started and its session opened. Against it: the next request,
//!   through the loaded stub. Medians over `--loads` fresh runtimes.
//! * **relay**: requests with `--window` in flight, answered by the echo
//!   hyperty, from a runtime of a.test through the JS stub and from a runtime of
//!   b.test through the built-in bridge (alternating which goes first each
//!   round): msgs/s (first send to last answer) and round-trip p50/p99.
//!
//! ```sh
//! cargo bench --bench protofly
//! cargo bench --bench protofly -- --rounds 5 --messages 50000 --loads 30
//! ```

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use hyperty::prelude::*;
use hyperty::ua::{RuntimeUa, UaConfig};
use serde_json::json;

const RAW_STUB: &str = include_str!("../examples/protofly/raw_stub.js");

#[derive(Debug, Parser)]
struct Args {
    /// Relay rounds (each measures the stub and the bridge once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests per relay run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Bytes of each request's body.value.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Fresh runtimes that load the stub on their first message.
    #[arg(long, default_value_t = 20)]
    loads: usize,
    /// Criterion passes `--bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Answers every request with its value.
struct Echo {
    ctx: HypertyContext,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Echo {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        if m.kind.expects_response() {
            let v = m.body.value.clone().unwrap_or_default();
            self.ctx.reply(&m, ResponseCode::Ok, v);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One relay run: `n` requests, `window` in flight, every one answered 200.
struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

async fn relay(
    rt: &RuntimeHandle,
    to: &Address,
    args: &Args,
    payload: &serde_json::Value,
) -> Result<Run, String> {
    let me = rt.url().component("bench");
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures_util::stream::iter(0..args.messages)
        .map(|_| {
            let m = Message::new(MessageType::Execute, me.clone(), to.clone())
                .with_value(payload.clone());
            let sent = Instant::now();
            let answer = rt.bus().post(m);
            async move {
                match answer.await {
                    Ok(r) if r.code() == Some(ResponseCode::Ok) => Ok(sent.elapsed()),
                    Ok(r) => Err(format!("answered {:?}", r.code())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .buffer_unordered(args.window)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Run {
        rate: args.messages as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// A runtime of a.test whose user agent finds b.test's catalogue at `b`.
async fn downloading_runtime(b: std::net::SocketAddr) -> Result<RuntimeHandle, String> {
    let rt = Runtime::start(RuntimeConfig::new("a.test")).map_err(|e| e.to_string())?;
    let mut ua = UaConfig::default();
    ua.resolve.insert("b.test".into(), b.to_string());
    RuntimeUa::start(&rt, ua).await.map_err(|e| e.to_string())?;
    Ok(rt)
}

async fn ask(rt: &RuntimeHandle, to: &Address) -> Result<Duration, String> {
    let me = rt.url().component("bench");
    let sent = Instant::now();
    let m = Message::new(MessageType::Execute, me, to.clone()).with_value(json!("hi"));
    match rt.bus().post(m).await {
        Ok(r) if r.code() == Some(ResponseCode::Ok) => Ok(sent.elapsed()),
        Ok(r) => Err(format!("answered {:?}: {:?}", r.code(), r.body.description)),
        Err(e) => Err(e.to_string()),
    }
}

async fn run(args: Args) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("protofly-bench-{}", std::process::id()));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let b = listener.local_addr().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("protocolstub")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("protocolstub/default.json"),
        json!({"objectName": "default", "objectType": "protocolstub", "version": "1.0.0",
               "sourcePackageURL": "default.js",
               "configuration": {"url": format!("ws://{b}/ws"), "domain": "b.test"}})
        .to_string(),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("protocolstub/default.js"), RAW_STUB).map_err(|e| e.to_string())?;
    let mut cfg = hyperty::config::NodeConfig::default();
    cfg.node.domain = "b.test".into();
    cfg.node.data_dir = None;
    cfg.identity.data_dir = None;
    cfg.auth.mode = hyperty::config::AuthMode::Optional;
    cfg.federation.enabled = false;
    cfg.catalogue.dir = Some(dir.clone());
    // the echo's session answers every request: no rate limit in its way
    cfg.limits.messages_per_second = 10_000_000;
    cfg.limits.burst = 10_000_000;
    let node = hyperty::node::start(listener, cfg).map_err(|e| e.to_string())?;
    let bridge = |rt: RuntimeHandle| {
        let url = node.ws_url();
        async move {
            rt.attach_node(hyperty::bridge::BridgeConfig::new(url))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(rt)
        }
    };
    let host =
        bridge(Runtime::start(RuntimeConfig::new("b.test")).map_err(|e| e.to_string())?).await?;
    let echo = host
        .spawn_hyperty(HypertySpec::new("echo", "b.test", |ctx| Echo { ctx }))
        .await
        .map_err(|e| e.to_string())?;
    let echo = echo.address().clone();

    // first message (stub loaded on the fly) against the next one
    let (mut first, mut next) = (Vec::new(), Vec::new());
    for _ in 0..args.loads {
        let rt = downloading_runtime(b).await?;
        first.push(ms(ask(&rt, &echo).await?));
        next.push(ms(ask(&rt, &echo).await?));
        rt.shutdown().await;
    }
    let (first, next) = (median(first), median(next));
    println!("first message, stub loaded on the fly (fetch + verify + start + open): {first:.2} ms (median of {})", args.loads);
    println!("a message through the loaded stub:                                    {next:.3} ms");
    println!("ratio first/loaded: {:.0}x", first / next);

    // relay through the JS stub and through the built-in bridge
    let stubbed = downloading_runtime(b).await?;
    ask(&stubbed, &echo).await?;
    let bridged =
        bridge(Runtime::start(RuntimeConfig::new("b.test")).map_err(|e| e.to_string())?).await?;
    ask(&bridged, &echo).await?;
    let payload = json!("x".repeat(args.size));
    let mut results: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    println!(
        "\nrelay: {} requests, {} in flight, {} B values (round trip through node and echo)",
        args.messages, args.window, args.size
    );
    println!("round  path     msgs/s     p50 ms   p99 ms");
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let rt = if which == 0 { &stubbed } else { &bridged };
            let r = relay(rt, &echo, &args, &payload).await?;
            println!(
                "{round:>5}  {:<7} {:>9.0} {:>9.3} {:>8.3}",
                ["js stub", "bridge"][which],
                r.rate,
                ms(r.p50),
                ms(r.p99)
            );
            results[which].push(r);
        }
    }
    let med = |w: usize, f: fn(&Run) -> f64| median(results[w].iter().map(f).collect());
    let (s_rate, b_rate) = (med(0, |r| r.rate), med(1, |r| r.rate));
    let (s_p50, b_p50) = (med(0, |r| ms(r.p50)), med(1, |r| ms(r.p50)));
    let (s_p99, b_p99) = (med(0, |r| ms(r.p99)), med(1, |r| ms(r.p99)));
    println!("median js stub: {s_rate:.0} msgs/s, p50 {s_p50:.3} ms, p99 {s_p99:.3} ms");
    println!("median bridge:  {b_rate:.0} msgs/s, p50 {b_p50:.3} ms, p99 {b_p99:.3} ms");
    println!(
        "js stub / bridge: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        s_rate / b_rate,
        s_p50 / b_p50,
        s_p99 / b_p99
    );
    stubbed.shutdown().await;
    bridged.shutdown().await;
    host.shutdown().await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match actix::System::new().block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("protofly bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
