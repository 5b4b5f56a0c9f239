//! Federation: domains reach each other through their nodes (the "network server
//! connector" of the reTHINK messaging node).
//!
//! A frame for an address of domain B arriving at A's node travels over one
//! node-to-node WebSocket link to B's node and is routed there like a local frame;
//! answers come back the same way.
//!
//! # Components
//!
//! ```text
//! NodeState::start
//!  └── PeerConnector (shared, read by the router on the hot path)
//!       ├── Directory       — [[peers]], discovery, peer key sets (JWKS), token checks
//!       └── PeerLink × peer — one actor per peer domain, on the arbiter (worker
//!                             thread) that first needed it; dies with the node
//!            └── reader + writer tasks of its current connection (transport)
//! HttpServer workers
//!  ├── GET /federation                 — a peer dials: authenticated, then handed to its PeerLink
//!  └── GET /.well-known/hyperty/node   — this node's discovery document
//! ```
//!
//! * **Routing.** The router gives every address of another domain to that
//!   domain's [`PeerLink`] (key `peer:<domain>`), created at first use by the
//!   [`PeerConnector`] — a plain shared table rather than an actor, because the
//!   router must find a link without an actor hop on every frame (design.md §6).
//! * **Finding a peer.** `[[peers]]` (domain, `ws://…/federation`, optional JWKS
//!   URL), or discovery at `https://<domain>/.well-known/hyperty/node`
//!   (`{domain, ws, jwks}`, see [`NodeDocument`]); `[federation] resolve` maps a
//!   domain to `host:port` over plain http (this build's HTTP client has no TLS).
//!   A domain neither listed nor discoverable is unknown and refused.
//! * **Mutual authentication.** The dialling node sends `Authorization: Bearer
//!   <peer token>`; the accepting node answers the upgrade with its own token in
//!   `hyperty-peer-token`. A peer token is a short-lived EdDSA JWT of the sender's
//!   identity provider (`sub` `domain://msg-node.<D>`, `aud` the other node,
//!   `token_use: peer`), checked against the sender's JWKS fetched over HTTP and
//!   cached for its `max-age`.
//! * **One link per pair.** When both nodes dial at once, the connection dialled
//!   by the lower domain name stays; the other is refused with 409.
//! * **Edge rules.** A peer sends only from addresses of its own domain and to
//!   addresses of ours (or to resources our sessions subscribed to at the peer),
//!   else 403; its frames pass the same parser, rate limit, abuse account, flow
//!   control and policy decision as a session's, with the peer's domain (and the
//!   user its node vouches for) as the authenticated identity. A frame that came
//!   over a link is never routed to a link, so a frame crosses one link at most.
//! * **Failure.** A lost link reconnects with backoff; frames wait in a bounded
//!   queue meanwhile; a request that waits `delivery_timeout_ms` gets 504 "domain
//!   unreachable: <domain>".

pub mod config;
pub mod directory;
pub mod error;
pub mod link;
mod transport;

use std::sync::Arc;

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use dashmap::DashMap;
use serde::Serialize;

pub use config::{FederationSection, PeerEntry};
pub use directory::{Directory, Endpoints, NodeDocument, DISCOVERY_PATH, FEDERATION_PATH};
pub use error::FederationError;
pub use link::{PeerLink, PEER_TOKEN_HEADER};

use crate::identity::IdentityProvider;
use crate::node::outbound::{OutboundQueue, QueueLimits};
use crate::node::router::{PeerRoute, PeerRoutes};
use crate::node::NodeState;

/// The state of a peer link, as reported by [`PeerConnector::links`] and `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// No connection (frames wait; redialling with backoff).
    Down,
    /// Dialling or accepting.
    Connecting,
    /// Connected and authenticated.
    Live,
}

/// What is known of one peer link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    /// Its state.
    pub state: LinkState,
    /// True if this node dialled the live connection.
    pub dialled: bool,
    /// Connections opened so far.
    pub opened: u64,
    /// Frames waiting for the link.
    pub queued: usize,
}

/// The link table shared with the link actors (they publish their state in it,
/// and a retiring link takes itself out of it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    pub(crate) info: Arc<DashMap<String, LinkInfo>>,
    pub(crate) routes: Arc<DashMap<String, (Addr<PeerLink>, PeerRoute)>>,
}

impl Links {
    /// Takes `link` out of the tables of `domain` (unless another link replaced it).
    pub(crate) fn retire(&self, domain: &str, link: &Addr<PeerLink>) {
        if self
            .routes
            .remove_if(domain, |_, (l, _)| l == link)
            .is_some()
        {
            self.info.remove(domain);
        }
    }
}

/// The peer connector: owns the peer table (domain → link actor), creates a link
/// at a domain's first use, and serves the federation endpoints (see the module
/// docs).
pub struct PeerConnector {
    node: NodeState,
    directory: Arc<Directory>,
    links: Links,
}

impl std::fmt::Debug for PeerConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnector")
            .field("domain", &self.directory.own())
            .field("peers", &self.links.routes.len())
            .finish_non_exhaustive()
    }
}

impl PeerConnector {
    /// The connector of `node`; with
    /// `connect_at_start`, the `[[peers]]` are dialled now.
    pub fn start(node: &NodeState) -> Arc<PeerConnector> {
        let config = &node.config;
        let directory = Arc::new(Directory::new(
            &config.node.domain,
            config.federation.clone(),
            config.peers.clone(),
            node.clock.clone(),
        ));
        let connector = Arc::new(PeerConnector {
            node: node.clone(),
            directory,
            links: Links::default(),
        });
        if config.federation.connect_at_start {
            for p in &config.peers {
                if let Some((link, _)) = connector.link(&p.domain) {
                    link.do_send(link::Dial);
                }
            }
        }
        connector
    }

    /// The link actor and route of `domain`, created at first use; `None` for
    /// this node's own domain, or for a domain not in `[[peers]]` when
    /// `max_peers` discovered links exist already.
    pub(crate) fn link(&self, domain: &str) -> Option<(Addr<PeerLink>, PeerRoute)> {
        let routes = &self.links.routes;
        if let Some(r) = routes.get(domain) {
            return Some(r.clone());
        }
        if domain == self.directory.own() {
            return None;
        }
        let configured = self.directory.is_configured(domain);
        if !configured && self.discovered_links() >= self.max_peers() {
            return None;
        }
        let entry = routes.entry(domain.to_owned()).or_insert_with(|| {
            let s = &self.node.config.session;
            let queue = OutboundQueue::new(
                QueueLimits {
                    slow_down: s.slow_down_bytes,
                    budget: s.max_pending_bytes,
                },
                None,
            );
            let (node, directory, links, q) = (
                self.node.clone(),
                self.directory.clone(),
                self.links.clone(),
                queue.clone(),
            );
            let d = domain.to_owned();
            // on the calling thread: a link's frames then usually stay on the thread
            // of the sessions that use it (no hop to a thread of its own)
            let addr = PeerLink::start_in_arbiter(&Arbiter::current(), move |_| {
                PeerLink::new(&d, node, directory, links, q, configured)
            });
            let route = PeerRoute {
                conn: addr.clone().recipient(),
                queue,
                kicker: addr.clone().recipient(),
            };
            (addr, route)
        });
        Some(entry.clone())
    }

    /// Links to domains that are not in `[[peers]]`.
    fn discovered_links(&self) -> usize {
        self.links
            .routes
            .iter()
            .filter(|r| !self.directory.is_configured(r.key()))
            .count()
    }

    /// The peer links and their states, by domain.
    pub fn links(&self) -> Vec<(String, LinkInfo)> {
        let mut v: Vec<_> = self
            .links
            .info
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The link state of `domain`, if a link to it exists.
    pub fn link_info(&self, domain: &str) -> Option<LinkInfo> {
        self.links.info.get(domain).map(|i| *i)
    }

    /// Peer endpoints and keys.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub(crate) fn idp(&self) -> &Addr<IdentityProvider> {
        &self.node.idp
    }

    pub(crate) fn max_peers(&self) -> usize {
        self.directory.config().max_peers
    }

    pub(crate) fn max_frame_size(&self) -> usize {
        self.node.config.session.max_frame_size
    }

    /// Closes every link (the node is stopping).
    pub async fn stop(&self) {
        let routes = &self.links.routes;
        let links: Vec<Addr<PeerLink>> = routes.iter().map(|r| r.0.clone()).collect();
        routes.clear();
        for l in links {
            let _ = l.send(link::Shutdown).await;
        }
    }

    /// Mounts `GET /federation` and `GET /.well-known/hyperty/node`.
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.clone()))
            .route(FEDERATION_PATH, web::get().to(transport::accept))
            .route(DISCOVERY_PATH, web::get().to(document));
    }
}

impl PeerRoutes for PeerConnector {
    fn route_to(&self, domain: &str) -> Option<PeerRoute> {
        self.link(domain).map(|(_, r)| r)
    }
}

/// This node's discovery document, its URLs built from the request's host.
async fn document(req: HttpRequest, connector: web::Data<Arc<PeerConnector>>) -> HttpResponse {
    let info = req.connection_info();
    let ws = if info.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    let host = info.host();
    HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=300",
        ))
        .json(NodeDocument {
            domain: connector.directory().own().to_owned(),
            ws: format!("{ws}://{host}{FEDERATION_PATH}"),
            jwks: format!("{}://{host}/.well-known/jwks.json", info.scheme()),
        })
}
