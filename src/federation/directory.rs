//! Where other domains' nodes are, and their keys.
//!
//! [`Directory`] answers, for a peer domain, its node's federation WebSocket URL and
//! its identity provider's JWKS URL ([`Endpoints`]): from `[[peers]]`, or by
//! discovery — `GET https://<domain>/.well-known/hyperty/node`, or plain
//! `http://<host:port>/…` when `[federation] resolve` maps the domain — which
//! every node serves ([`NodeDocument`]). It fetches and caches each peer's JWK set
//! for its `Cache-Control: max-age` (within `jwks_min_age_secs` ..
//! `jwks_max_age_secs`), refetching once when a token names a key it does not
//! hold, and verifies peer tokens against it. Everything it keeps is bounded by
//! `max_peers`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::config::{FederationSection, PeerEntry};
use super::error::FederationError;
use crate::identity::{Claims, Jwk};
use hyperty_actors::clock::Clock;

/// The well-known path of a node's discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/hyperty/node";

/// The path of a node's federation endpoint.
pub const FEDERATION_PATH: &str = "/federation";

/// A node's discovery document, served at [`DISCOVERY_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDocument {
    /// The domain the node serves.
    pub domain: String,
    /// Its federation endpoint, `ws(s)://HOST/federation`.
    pub ws: String,
    /// Its identity provider's key set.
    pub jwks: String,
}

/// How to reach a peer's node and check its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The federation WebSocket URL.
    pub ws: String,
    /// The JWKS URL.
    pub jwks: String,
}

struct KeySet {
    keys: Arc<HashMap<String, DecodingKey>>,
    fetched: Instant,
    max_age: Duration,
}

/// Peer endpoints and keys (see the module docs). Shared by the accepting HTTP
/// handler and the link actors.
pub struct Directory {
    own: String,
    config: FederationSection,
    peers: Vec<PeerEntry>,
    discovered: Mutex<HashMap<String, (Endpoints, Instant)>>,
    keys: Mutex<HashMap<String, KeySet>>,
    /// Domains whose discovery answered that no node runs there, and when.
    unknown: Mutex<HashMap<String, Instant>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("own", &self.own)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// Most domains remembered as running no node (the oldest is forgotten first).
const UNKNOWN_DOMAINS: usize = 4096;

/// `max-age` of a `Cache-Control` value.
fn max_age(cache_control: Option<&str>) -> Option<u64> {
    cache_control?
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim().parse().ok())
}

/// Keeps at most `limit` entries: the oldest goes first.
fn make_room<V>(map: &mut HashMap<String, V>, limit: usize, age: impl Fn(&V) -> Instant) {
    while map.len() >= limit {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

impl Directory {
    /// A directory for the node of `own`, checking token times on `clock` (the
    /// node's one clock).
    pub fn new(
        own: &str,
        config: FederationSection,
        peers: Vec<PeerEntry>,
        clock: Arc<dyn Clock>,
    ) -> Directory {
        Directory {
            clock,
            own: own.to_owned(),
            config,
            peers,
            discovered: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
        }
    }

    /// The federation settings.
    pub fn config(&self) -> &FederationSection {
        &self.config
    }

    /// The domain this node serves.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// The configured peers.
    pub fn peers(&self) -> &[PeerEntry] {
        &self.peers
    }

    /// Where discovery looks for `domain`: `resolve`d over http, else https.
    fn discovery_url(&self, domain: &str) -> String {
        match self.config.resolve.get(domain) {
            Some(host) => format!("http://{host}{DISCOVERY_PATH}"),
            None => format!("https://{domain}{DISCOVERY_PATH}"),
        }
    }

    fn client(&self) -> awc::Client {
        crate::bridge::http_client(self.config.connect_timeout())
    }

    /// The endpoints of `domain`'s node.
    pub async fn endpoints(&self, domain: &str) -> Result<Endpoints, FederationError> {
        if !self.config.enabled {
            return Err(FederationError::Disabled);
        }
        if let Some(p) = self.peers.iter().find(|p| p.domain == domain) {
            return Ok(Endpoints {
                ws: p.url.clone(),
                jwks: p.jwks_url(),
            });
        }
        if !self.config.discovery || !crate::identity::valid_domain(domain) || domain == self.own {
            return Err(FederationError::UnknownDomain(domain.to_owned()));
        }
        let ttl = Duration::from_secs(self.config.jwks_max_age_secs);
        if let Some((e, at)) = self.lock_discovered().get(domain) {
            if at.elapsed() < ttl {
                return Ok(e.clone());
            }
        }
        if self.recently_unknown(domain) {
            return Err(FederationError::UnknownDomain(format!(
                "{domain} (no node was found there recently)"
            )));
        }
        let found = self.discover(domain).await;
        if let Err(FederationError::UnknownDomain(_)) = &found {
            let mut u = self.lock_unknown();
            make_room(&mut u, UNKNOWN_DOMAINS, |at| *at);
            u.insert(domain.to_owned(), Instant::now());
        }
        found
    }

    /// Whether `domain` is a configured peer (`[[peers]]`).
    pub fn is_configured(&self, domain: &str) -> bool {
        self.peers.iter().any(|p| p.domain == domain)
    }

    fn recently_unknown(&self, domain: &str) -> bool {
        let retire = self.config.retire_after();
        let mut u = self.lock_unknown();
        match u.get(domain) {
            Some(at) if at.elapsed() < retire => true,
            Some(_) => {
                u.remove(domain);
                false
            }
            None => false,
        }
    }

    /// Reads `domain`'s node document (discovery proper).
    async fn discover(&self, domain: &str) -> Result<Endpoints, FederationError> {
        let url = self.discovery_url(domain);
        let _span = tracing::debug_span!("federation.discover", peer = domain, %url).entered();
        let body = self.get(domain, &url).await?.0;
        let doc: NodeDocument = serde_json::from_slice(&body).map_err(|_| {
            FederationError::UnknownDomain(format!("{domain} (no node document at {url})"))
        })?;
        if doc.domain != domain
            || !(doc.ws.starts_with("ws://") || doc.ws.starts_with("wss://"))
            || !(doc.jwks.starts_with("http://") || doc.jwks.starts_with("https://"))
        {
            return Err(FederationError::UnknownDomain(format!(
                "{domain} (the document at {url} names another domain or bad URLs)"
            )));
        }
        let e = Endpoints {
            ws: doc.ws,
            jwks: doc.jwks,
        };
        info!(peer = domain, ws = %e.ws, "peer discovered");
        let mut d = self.lock_discovered();
        make_room(&mut d, self.config.max_peers, |(_, at)| *at);
        d.insert(domain.to_owned(), (e.clone(), Instant::now()));
        Ok(e)
    }

    /// Forgets what discovery found for `domain` (its node moved or went away).
    pub fn forget(&self, domain: &str) {
        self.lock_discovered().remove(domain);
    }

    fn lock_discovered(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Endpoints, Instant)>> {
        self.discovered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_unknown(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.unknown.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeySet>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A GET read up to `max_document_bytes`: the body and its `max-age`.
    async fn get(
        &self,
        domain: &str,
        url: &str,
    ) -> Result<(bytes::Bytes, Option<u64>), FederationError> {
        let mut resp = self
            .client()
            .get(url)
            .insert_header((header::ACCEPT, "application/json"))
            .send()
            .await
            .map_err(|e| FederationError::unreachable(domain, format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(FederationError::unreachable(
                domain,
                format!("{url}: HTTP {}", resp.status().as_u16()),
            ));
        }
        let age = max_age(
            resp.headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let body = resp
            .body()
            .limit(self.config.max_document_bytes)
            .await
            .map_err(|e| FederationError::unreachable(domain, format!("{url}: {e}")))?;
        Ok((body, age))
    }

    /// `domain`'s keys: cached while fresh, fetched otherwise (or when `refresh`
    /// and the cached set is older than `jwks_min_age_secs`).
    async fn keys(
        &self,
        domain: &str,
        jwks: &str,
        refresh: bool,
    ) -> Result<Arc<HashMap<String, DecodingKey>>, FederationError> {
        let min = Duration::from_secs(self.config.jwks_min_age_secs);
        if let Some(k) = self.lock_keys().get(domain) {
            let age = k.fetched.elapsed();
            if age < k.max_age && !(refresh && age >= min) {
                return Ok(k.keys.clone());
            }
        }
        let _span = tracing::debug_span!("federation.jwks", peer = domain, url = %jwks).entered();
        let (body, age) = self.get(domain, jwks).await?;
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(&body)
            .map_err(|_| FederationError::unreachable(domain, format!("{jwks}: not a JWK set")))?;
        let keys: HashMap<String, DecodingKey> = raw
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| jwk.decoding_key().ok().map(|k| (jwk.kid, k)))
            .take(16)
            .collect();
        if keys.is_empty() {
            return Err(FederationError::unreachable(
                domain,
                format!("{jwks}: no usable Ed25519 keys"),
            ));
        }
        let max_age = Duration::from_secs(
            age.unwrap_or(self.config.jwks_min_age_secs)
                .clamp(self.config.jwks_min_age_secs, self.config.jwks_max_age_secs),
        );
        debug!(
            peer = domain,
            keys = keys.len(),
            ?max_age,
            "peer keys cached"
        );
        let keys = Arc::new(keys);
        let mut all = self.lock_keys();
        if !all.contains_key(domain) {
            make_room(&mut all, self.config.max_peers, |k| k.fetched);
        }
        all.insert(
            domain.to_owned(),
            KeySet {
                keys: keys.clone(),
                fetched: Instant::now(),
                max_age,
            },
        );
        Ok(keys)
    }

    /// Verifies that `token` proves `domain` to this node, with `domain`'s keys
    /// (fetched at `endpoints.jwks`).
    pub async fn verify(
        &self,
        domain: &str,
        endpoints: &Endpoints,
        token: &str,
    ) -> Result<Claims, FederationError> {
        let leeway = self.config.clock_skew_secs;
        let keys = self.keys(domain, &endpoints.jwks, false).await?;
        let check = |keys: &HashMap<String, DecodingKey>| {
            crate::identity::peer::verify(
                token,
                keys,
                domain,
                &self.own,
                self.clock.now_secs(),
                leeway,
            )
        };
        match check(&keys) {
            Err(crate::identity::IdentityError::InvalidToken(why)) if why.contains("key set") => {
                // perhaps a rotation: one refetch
                let keys = self.keys(domain, &endpoints.jwks, true).await?;
                check(&keys).map_err(|e| FederationError::from_identity(domain, e))
            }
            other => other.map_err(|e| FederationError::from_identity(domain, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperty_actors::clock::SystemClock;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age(Some("public, max-age=300")), Some(300));
        assert_eq!(max_age(Some("no-store")), None);
        assert_eq!(max_age(None), None);
    }

    #[test]
    fn resolve_overrides_discovery_with_plain_http() {
        let mut f = FederationSection::default();
        f.resolve.insert("b.test".into(), "127.0.0.1:9".into());
        let d = Directory::new("a.test", f, Vec::new(), Arc::new(SystemClock));
        assert_eq!(
            d.discovery_url("b.test"),
            "http://127.0.0.1:9/.well-known/hyperty/node"
        );
        assert_eq!(
            d.discovery_url("c.test"),
            "https://c.test/.well-known/hyperty/node"
        );
    }

    #[test]
    fn tables_are_bounded() {
        let mut m: HashMap<String, Instant> = HashMap::new();
        let t0 = Instant::now();
        for i in 0..5u64 {
            make_room(&mut m, 3, |v| *v);
            m.insert(i.to_string(), t0 + Duration::from_millis(i));
        }
        assert_eq!(m.len(), 3);
        assert!(!m.contains_key("0") && m.contains_key("4"));
    }
}
