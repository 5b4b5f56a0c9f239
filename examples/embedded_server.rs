//! An application serving the messaging node's routes inside its own actix-web
//! `App`, next to its own routes, in its own `HttpServer`.
//!
//! `cargo run --example embedded_server` then open `http://127.0.0.1:<port>/hello`,
//! `/health`, or connect a reTHINK runtime to `ws://127.0.0.1:<port>/ws`.
//! With `--once` it checks its own routes and exits.

use std::net::TcpListener;

use actix_web::{web, App, HttpResponse, HttpServer};
use hyperty::config::NodeConfig;
use hyperty::node::NodeState;

async fn hello() -> HttpResponse {
    HttpResponse::Ok().body("hello from the application\n")
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

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .route("/hello", web::get().to(hello))
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
        handle.stop(true).await;
        return Ok(());
    }
    server.await?;
    Ok(())
}
