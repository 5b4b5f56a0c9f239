//! The messaging node: sessions, address allocation, subscriptions, routing.
//!
//! # Supervision tree
//!
//! ```text
//! NodeState::start (on the calling arbiter)
//!  ├── AddressAllocation  — owns Router.owners and the durable holder records
//!  ├── SubscriptionManager — owns Router.subscribers (runtime-core's allocation form
//!  │                         through AddressAllocation)
//!  ├── SessionManager     — owns Router.slots / Router.runtimes and the runtime
//!  │                        tokens; drops sessions in both above
//!  ├── DomainRegistry (domain://registry.<D>) and QosBroker (domain://qos.<D>)
//!  │                      — told of session lifecycle changes by the SessionManager
//!  ├── ClusterDirectory   — (with `[cluster] redis`) membership and heartbeat;
//!  │                        runs the cross-node forwarder and receiver loops
//!  │                        (see crate::cluster)
//!  ├── dashboard::Sampler — (when the dashboard is on) samples the counters above
//!  │                        into the dashboard's history once a second
//!  └── PeerConnector      — (when federation is on) owns the peer links, one
//!                           actor per other domain (see crate::federation)
//! HttpServer workers (one arbiter per core)
//!  ├── WsSession per connection (server::ws) — routes through the shared Router
//!  ├── HttpSession per HTTP long-poll session (server::http) — ends when it expires
//!  └── SioSession per Socket.IO session (server::socketio), and an EioSocket per
//!      WebSocket it uses; the socket dies with its session
//!  (all three run the session core, server::session)
//! ```
//!
//! Time: [`NodeState::start_with_clock`] ([`NodeState::start`]: the system clock)
//! hands one `Arc<dyn Clock>` to the policy engine, the QoS broker, the peer
//! directory (peer token times), the identity provider (whose
//! verifier the sessions check tokens with), the domain registry and the address
//! holders, so expiry, token lifetimes and time conditions all follow one clock.
//!
//! A session's actor dies with its socket; its session (addresses, subscriptions,
//! buffered frames) lives on in the tables until `close` or the end of the grace
//! period. Stopping the server stops every session.
//!
//! Embedding: build a [`NodeState`] and mount it into any actix-web `App` with
//! [`NodeState::configure`]; or let [`start`]/[`run`] serve it on a bound listener.

pub mod allocation;
pub mod events;
pub mod frame;
pub mod handoff;
pub mod holders;
pub mod metrics;
pub mod outbound;
pub mod rights;
pub mod router;
pub mod sessions;
pub mod subscriptions;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::config::{ConfigError, NodeConfig};
use crate::domain_registry::{
    DomainRegistry, DomainRegistryError, RegistryNotification, RuntimeDisconnected,
    RuntimeReconnected,
};
use crate::identity::{IdentityError, IdentityProvider, TokenVerifier};
use allocation::AddressAllocation;
use hyperty_actors::clock::{Clock, SystemClock};
use hyperty_actors::policy::{Pdp, PdpHandle, PolicyError};
pub use outbound::on_connect;
use router::Router;
use sessions::Lifecycle;
use sessions::{SessionManager, SessionRules};
use subscriptions::SubscriptionManager;

/// Errors of starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Socket trouble.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The domain registry refused its configuration.
    #[error(transparent)]
    Registry(#[from] DomainRegistryError),
    /// The identity provider could not start (configuration, key file).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The policy file or configuration was refused.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The node's durable records could not be opened.
    #[error(transparent)]
    Store(#[from] holders::HoldersError),
    /// The catalogue directory could not be read.
    #[error(transparent)]
    Catalogue(#[from] crate::catalogue::CatalogueError),
    /// The `[cluster]` settings were refused.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Publishes node-originated notifications (registry status changes) to the
/// `/sm` subscribers of their `to`.
#[derive(Debug)]
struct Publisher(Arc<Router>);

impl Actor for Publisher {
    type Context = Context<Self>;
}

impl Handler<RegistryNotification> for Publisher {
    type Result = ();
    fn handle(&mut self, n: RegistryNotification, _: &mut Context<Self>) {
        self.0.publish(&n.0);
    }
}

/// Runtime sessions coming and going change the status of their registry entries.
impl Handler<Lifecycle> for DomainRegistry {
    type Result = ();
    fn handle(&mut self, l: Lifecycle, ctx: &mut Context<Self>) {
        match l.event {
            "lost" | "close" => ctx.notify(RuntimeDisconnected { runtime: l.runtime }),
            _ => ctx.notify(RuntimeReconnected { runtime: l.runtime }),
        }
    }
}

/// Everything a node's HTTP handlers need; cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeState {
    pub(crate) router: Arc<Router>,
    pub(crate) sessions: Addr<SessionManager>,
    pub(crate) allocation: Addr<AddressAllocation>,
    pub(crate) subscriptions: Addr<SubscriptionManager>,
    pub(crate) registry: Addr<DomainRegistry>,
    pub(crate) qos: Addr<crate::qos::QosBroker>,
    pub(crate) idp: Addr<IdentityProvider>,
    pub(crate) verifier: TokenVerifier,
    pub(crate) pdp: PdpHandle,
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) federation: Option<Arc<crate::federation::PeerConnector>>,
    pub(crate) catalogue: Arc<crate::catalogue::Catalogue>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dashboard: Option<Addr<crate::dashboard::Sampler>>,
}

impl NodeState {
    /// Validates `config` and starts the node's actors on the current arbiter
    /// (inside an actix system), on the system clock.
    pub fn start(config: NodeConfig) -> Result<NodeState, NodeError> {
        NodeState::start_with_clock(config, Arc::new(SystemClock))
    }

    /// Like [`NodeState::start`], with every time rule of the node read on `clock`:
    /// this one instance is handed to the policy engine, the identity provider (and
    /// through its verifier the sessions' token checks), the domain registry and
    /// the address holders. Tests pass a
    /// [`ManualClock`](hyperty_actors::clock::ManualClock) and move it.
    pub fn start_with_clock(
        config: NodeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<NodeState, NodeError> {
        config.validate()?;
        let catalogue = Arc::new(crate::catalogue::Catalogue::load(&config.catalogue)?);
        let router = Arc::new(
            Router::new(&config.node.domain, config.session.grace_buffer)
                .with_grace_bytes(config.session.max_pending_bytes)
                .with_metrics(config.metrics.enabled),
        );
        router.hold_in_passes();
        let pdp = Pdp::new(config.policy.clone())?
            .with_clock(clock.clone())
            .start();
        let cluster = crate::cluster::ClusterStore::open(&config.cluster)
            .map_err(DomainRegistryError::from)?;
        let idp = IdentityProvider::with_clock(
            &config.node.domain,
            config.identity.clone(),
            clock.clone(),
        )?
        .with_cluster(cluster.clone());
        let verifier = idp.verifier();
        let idp = idp.start();
        let a = &config.allocation;
        let holders = holders::Holders::open(
            config.node.data_dir.as_deref(),
            a.holder_retention_secs,
            a.max_holder_records,
            clock.now_secs(),
        )?;
        let allocation =
            AddressAllocation::new(router.clone(), a.clone(), holders, clock.clone()).start();
        let subscriptions = SubscriptionManager::new(
            router.clone(),
            allocation.clone(),
            config.subscriptions.clone(),
            config.policy.managers.clone(),
        )
        .start();
        let publisher = Publisher(router.clone()).start();
        let registry = DomainRegistry::new(
            &config.node.domain,
            config.registry.clone(),
            publisher.recipient(),
            clock.clone(),
        )?
        .with_cluster(cluster)
        .start();
        let qos = crate::qos::QosBroker::new(&config.node.domain, config.qos.clone())
            .with_clock(clock.clone())
            .start();
        let sessions = SessionManager::new(
            router.clone(),
            allocation.clone(),
            subscriptions.clone(),
            SessionRules {
                grace: config.session.grace_period(),
                max_per_user: config.limits.max_sessions_per_user,
                max_stub_urls: config.allocation.max_stub_urls,
                expiry_grace: std::time::Duration::from_millis(config.auth.expiry_grace_ms),
            },
            verifier.clone(),
            vec![registry.clone().recipient(), qos.clone().recipient()],
        )
        .with_write_deadline(config.session.write_deadline())
        .start();
        router.set_evictions(sessions.clone().recipient());
        if let Some(cluster) = crate::cluster::ClusterNode::open(&config.cluster)? {
            router.set_cluster(cluster.clone());
            crate::cluster::ClusterDirectory::new(
                cluster,
                router.clone(),
                sessions.clone().recipient(),
                sessions.clone().recipient(),
                subscriptions.clone().recipient(),
                registry.clone().recipient(),
            )
            .start();
        }
        tracing::info!(domain = %config.node.domain, "messaging node started");
        let mut state = NodeState {
            router,
            sessions,
            allocation,
            subscriptions,
            registry,
            qos,
            idp,
            verifier,
            pdp,
            config: Arc::new(config),
            federation: None,
            catalogue,
            clock,
            dashboard: None,
        };
        if state.config.federation.enabled {
            let peers = crate::federation::PeerConnector::start(&state);
            state.router.set_peers(peers.clone());
            state.federation = Some(peers);
        }
        if state.config.dashboard.enabled {
            let sampler = crate::dashboard::Sampler::new(&state, &state.config.dashboard);
            state.dashboard = Some(sampler.start());
        }
        Ok(state)
    }

    /// The peer connector (links to other domains' nodes), when federation is on.
    pub fn federation(&self) -> Option<&Arc<crate::federation::PeerConnector>> {
        self.federation.as_ref()
    }

    /// The routing tables and counters.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The allocation actor.
    pub fn allocation(&self) -> &Addr<AddressAllocation> {
        &self.allocation
    }

    /// The embedded domain registry.
    pub fn registry(&self) -> &Addr<DomainRegistry> {
        &self.registry
    }

    /// The node's policy decision point (its snapshot is read on every routed frame).
    pub fn pdp(&self) -> &PdpHandle {
        &self.pdp
    }

    /// The catalogue served under `/.well-known/` (see [`crate::catalogue`]).
    pub fn catalogue(&self) -> &Arc<crate::catalogue::Catalogue> {
        &self.catalogue
    }

    /// The QoS broker (`domain://qos.<D>`, `GET /qos`).
    pub fn qos(&self) -> &Addr<crate::qos::QosBroker> {
        &self.qos
    }

    /// The embedded identity provider (`domain-idp://<D>`, `/idp/…`,
    /// `/.well-known/jwks.json`).
    pub fn idp(&self) -> &Addr<IdentityProvider> {
        &self.idp
    }

    /// Mounts the node's routes (`/ws`, `/http/…`, `/socket.io/`, `/health`, `/metrics`,
    /// `/dashboard…`, `/`, `/demo/…`, `/client/hyperty.js`, `/registry/…`, `/qos…`,
    /// `/idp/…`, `/.well-known/jwks.json`, the catalogue's `/.well-known/<type>/<name>`)
    /// into an actix-web app:
    /// `App::new().configure(state.configure())`.
    pub fn configure(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        let state = self.clone();
        let reads = |public: bool| {
            if public || state.config.auth.mode == crate::config::AuthMode::Optional {
                crate::domain_registry::HttpReads::Public
            } else {
                crate::domain_registry::HttpReads::Token(state.verifier.clone())
            }
        };
        let registry_reads = web::Data::new(reads(state.config.registry.public_reads));
        let qos_reads = web::Data::new(crate::qos::QosReads(reads(state.config.qos.public_reads)));
        let metrics_reads = web::Data::new(metrics::MetricsReads(reads(
            state.config.metrics.public_reads,
        )));
        let http_sessions = web::Data::new(crate::server::http::HttpSessions::default());
        let sio_sessions = web::Data::new(crate::server::socketio::SioSessions::default());
        let dashboard = state.dashboard.clone().map(|sampler| {
            crate::dashboard::http::Routes::new(sampler, reads(state.config.dashboard.public_reads))
        });
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(state.clone()))
                .app_data(http_sessions.clone())
                .app_data(sio_sessions.clone())
                .app_data(web::Data::new(state.registry.clone()))
                .app_data(registry_reads.clone())
                .app_data(web::Data::new(state.qos.clone()))
                .app_data(qos_reads.clone())
                .app_data(web::Data::new(state.idp.clone()))
                .route("/ws", web::get().to(crate::server::ws::upgrade))
                .route("/health", web::get().to(health))
                .configure(crate::server::assets::configure)
                .configure(crate::server::http::configure)
                .configure(crate::server::socketio::configure)
                .configure(crate::domain_registry::configure)
                .configure(crate::qos::configure)
                .configure(crate::identity::configure);
            if state.config.metrics.enabled {
                cfg.app_data(metrics_reads.clone())
                    .route("/metrics", web::get().to(metrics::serve));
            }
            if let Some(d) = &dashboard {
                d.configure(cfg);
            }
            if let Some(f) = &state.federation {
                f.configure(cfg);
            }
            // after the federation's /.well-known/hyperty/node
            cfg.app_data(web::Data::new(state.catalogue.clone()))
                .configure(crate::catalogue::configure);
        }
    }
}

async fn health(node: web::Data<NodeState>) -> HttpResponse {
    let r = &node.router;
    HttpResponse::Ok().json(serde_json::json!({
        "status": "up",
        "domain": r.domain(),
        "sessions": r.session_count(),
        "live": r.live_count(),
        "stats": r.snapshot(),
        "peers": node.federation.as_ref().map(|f| f.links()).unwrap_or_default(),
        "cluster": r.cluster().map(|c| serde_json::json!({
            "node": c.id(),
            "redis": if c.redis_up() { "reachable" } else { "unreachable" },
            "members": c.members(),
        })),
    }))
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    addr: SocketAddr,
    server: ServerHandle,
    state: NodeState,
}

impl NodeHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://HOST:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://HOST:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node's state.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// Closes every session ("node shutting down"), stops accepting, waits for
    /// the workers and closes the durable records (a new node may open them).
    pub async fn stop(&self) {
        let keys: Vec<_> = self
            .state
            .router
            .slots
            .iter()
            .map(|s| s.key().clone())
            .collect();
        for k in keys {
            self.state.router.kick(&k, "node shutting down");
        }
        // peer links first: their connections would hold the graceful stop
        if let Some(f) = &self.state.federation {
            f.stop().await;
        }
        self.server.stop(true).await;
        if let Some(c) = self.state.router.cluster() {
            if let Err(e) = c.leave().await {
                tracing::warn!(error = %e, "could not leave the cluster (its record expires)");
            }
        }
        let _ = self.state.allocation.send(allocation::CloseStore).await;
        // closes the identity store, so the data directory can be opened again
        let _ = self.state.idp.send(crate::identity::Shutdown).await;
    }
}

/// Serves a node on an already-bound `listener`, in the current actix system, and
/// returns at once.
pub fn start(listener: TcpListener, config: NodeConfig) -> Result<NodeHandle, NodeError> {
    start_with_clock(listener, config, Arc::new(SystemClock))
}

/// Like [`start`], with the node's time rules on `clock` (see
/// [`NodeState::start_with_clock`]).
pub fn start_with_clock(
    listener: TcpListener,
    config: NodeConfig,
    clock: Arc<dyn Clock>,
) -> Result<NodeHandle, NodeError> {
    let addr = listener.local_addr()?;
    let workers = match config.node.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let state = NodeState::start_with_clock(config, clock)?;
    if let Some(c) = state.router.cluster() {
        c.advertise(format!("ws://{addr}/ws"));
    }
    let mount = state.configure();
    let server = HttpServer::new(move || App::new().configure(mount.clone()))
        .workers(workers)
        .tcp_nodelay(true)
        .on_connect(on_connect)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(NodeHandle {
        addr,
        server: handle,
        state,
    })
}

/// Serves a node on `listener` until `shutdown` resolves, then stops gracefully.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let node = start(listener, config)?;
    shutdown.await;
    tracing::info!("shutting down");
    node.stop().await;
    Ok(())
}
