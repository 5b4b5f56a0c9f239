//! An application serving the messaging node's routes inside its own actix-web
//! `App`, next to its own routes, in its own `HttpServer`.
//!
//! `cargo run --example embedded_server` then open `http://127.0.0.1:<port>/hello`,
//! `/health`, `/dashboard`, or connect a reTHINK runtime to `ws://127.0.0.1:<port>/ws`.
//! With `--once` it checks its own routes and exits.
//!
//! The application also runs a hyperty runtime of its own and serves one
//! Prometheus scrape at `/metrics`: the node's series followed by the runtime's bus
//! statistics (`RuntimeHandle::metrics`). Its route is registered before the
//! node's, so it answers `/metrics`; it is open to anyone, as an application's own
//! routes are (put it behind the application's authentication in production).

use std::net::TcpListener;

use actix_web::{web, App, HttpResponse, HttpServer};
use hyperty::config::NodeConfig;
use hyperty::node::NodeState;
use hyperty::{Runtime, RuntimeConfig, RuntimeHandle};

async fn hello() -> HttpResponse {
    HttpResponse::Ok().body("hello from the application\n")
}

/// The node's statistics and the embedded runtime's bus, in one exposition.
async fn metrics(node: web::Data<NodeState>, runtime: web::Data<RuntimeHandle>) -> HttpResponse {
    let mut text = hyperty::node::metrics::render(&node).await;
    text.push_str(&runtime.metrics());
    HttpResponse::Ok()
        .content_type(hyperty::metrics::CONTENT_TYPE)
        .body(text)
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = NodeConfig::default();
    cfg.node.domain = "app.example".to_owned();
    cfg.identity.data_dir = None;
    cfg.node.data_dir = None; // address holders in memory too // signing keys in memory for this demo
                              // the node's actors; its routes are mounted below with `configure`
    let node = NodeState::start(cfg)?;
    let mount = node.configure();
    // the application's own runtime (its hyperties would run here)
    let runtime = web::Data::new(Runtime::start(RuntimeConfig::new("app.example"))?);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(runtime.clone())
            .route("/hello", web::get().to(hello))
            // before the node's routes, so this one answers /metrics
            .route("/metrics", web::get().to(metrics))
            .configure(mount.clone())
    })
    .tcp_nodelay(true)
    // lets the node shut the socket of a client that stopped reading
    .on_connect(hyperty::node::on_connect)
    .workers(2)
    .listen(listener)?
    .run();
    println!("application on http://{addr}/hello, messaging node on ws://{addr}/ws");

    if std::env::args().any(|a| a == "--once") {
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = awc::Client::default();
        for path in ["/hello", "/health"] {
            let mut resp = client.get(format!("http://{addr}{path}")).send().await?;
            let body = resp.body().await?;
            println!(
                "GET {path} -> {} {}",
                resp.status(),
                String::from_utf8_lossy(&body).trim()
            );
        }
        let mut resp = client.get(format!("http://{addr}/metrics")).send().await?;
        let text = String::from_utf8_lossy(&resp.body().await?).into_owned();
        let has = |series: &str| text.lines().any(|l| l.starts_with(series));
        println!(
            "GET /metrics -> {}: node series {}, runtime bus series {}",
            resp.status(),
            has("hyperty_frames_in_total"),
            has("hyperty_bus_delivered_total")
        );
        handle.stop(true).await;
        return Ok(());
    }
    server.await?;
    Ok(())
}
