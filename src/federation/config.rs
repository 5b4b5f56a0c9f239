//! `[federation]` and `[[peers]]`: how this node finds and links to other domains'
//! nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// One `[[peers]]` entry: a domain whose node is known without discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// The peer's domain.
    pub domain: String,
    /// Its node's federation endpoint, `ws://HOST:PORT/federation`.
    pub url: String,
    /// Where its identity provider publishes its keys; default: the same host and
    /// port over http(s), `/.well-known/jwks.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
}

impl PeerEntry {
    /// The JWKS URL: `jwks`, or derived from `url`.
    pub fn jwks_url(&self) -> String {
        self.jwks.clone().unwrap_or_else(|| {
            let (scheme, rest) = match self.url.split_once("://") {
                Some(("wss", rest)) => ("https", rest),
                Some((_, rest)) => ("http", rest),
                None => ("http", self.url.as_str()),
            };
            let host = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{host}/.well-known/jwks.json")
        })
    }
}

/// `[federation]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationSection {
    /// Whether this node links to other domains at all (when false, an address of
    /// another domain gets 404 and `/federation` refuses every peer).
    pub enabled: bool,
    /// Whether a domain missing from `[[peers]]` is looked up at
    /// `https://<domain>/.well-known/hyperty/node`; when false it is unknown and
    /// refused.
    pub discovery: bool,
    /// Host and port to reach a domain at instead of its DNS name, over plain
    /// `http://` (tests and local deployments), e.g. `{ "beta.test" = "127.0.0.1:9091" }`.
    pub resolve: BTreeMap<String, String>,
    /// Dial the `[[peers]]` when the node starts (otherwise at their first frame).
    pub connect_at_start: bool,
    /// Lifetime of the tokens this node proves its domain with (seconds).
    pub token_lifetime_secs: u64,
    /// Clock skew tolerated on a peer's token (seconds).
    pub clock_skew_secs: u64,
    /// First reconnect delay (ms); it doubles up to `reconnect_max_ms`.
    pub reconnect_initial_ms: u64,
    /// Longest reconnect delay (ms).
    pub reconnect_max_ms: u64,
    /// How long dialling, the handshake and each discovery or key fetch may take (ms).
    pub connect_timeout_ms: u64,
    /// Frames kept for a peer while its link is down...
    pub queue_frames: usize,
    /// ...and their bytes; beyond either, requests get 504 at once.
    pub queue_bytes: usize,
    /// A request that waited this long for its peer's link gets 504 "domain
    /// unreachable" naming the domain (ms).
    pub delivery_timeout_ms: u64,
    /// Most discovered peer domains linked or being linked at once (`[[peers]]`
    /// do not count: a flood of made-up domains never crowds them out).
    pub max_peers: usize,
    /// A discovered peer's link that has been down this long with nothing waiting
    /// is retired (its entry freed); a domain found not to run a node is refused
    /// at once for as long (ms).
    pub retire_after_ms: u64,
    /// A peer's key set is used for its `Cache-Control: max-age`, but at least this
    /// long (seconds)...
    pub jwks_min_age_secs: u64,
    /// ...and at most this long (seconds).
    pub jwks_max_age_secs: u64,
    /// Largest discovery document or key set read (bytes).
    pub max_document_bytes: usize,
}

impl Default for FederationSection {
    fn default() -> Self {
        FederationSection {
            enabled: true,
            discovery: true,
            resolve: BTreeMap::new(),
            connect_at_start: false,
            token_lifetime_secs: 60,
            clock_skew_secs: 30,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 5_000,
            connect_timeout_ms: 5_000,
            queue_frames: 4_096,
            queue_bytes: 16 << 20,
            delivery_timeout_ms: 5_000,
            max_peers: 64,
            retire_after_ms: 30_000,
            jwks_min_age_secs: 5,
            jwks_max_age_secs: 3_600,
            max_document_bytes: 64 * 1024,
        }
    }
}

impl FederationSection {
    /// First reconnect delay.
    pub fn reconnect_initial(&self) -> Duration {
        Duration::from_millis(self.reconnect_initial_ms)
    }
    /// How long an idle, down link of a discovered peer is kept.
    pub fn retire_after(&self) -> Duration {
        Duration::from_millis(self.retire_after_ms)
    }

    /// Longest reconnect delay.
    pub fn reconnect_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_ms)
    }
    /// Dial, handshake and fetch timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    /// How long a request may wait for a link.
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    /// Checks the limits and the peers.
    pub fn validate(&self, peers: &[PeerEntry], own: &str) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.token_lifetime_secs == 0
            || self.reconnect_initial_ms == 0
            || self.reconnect_max_ms < self.reconnect_initial_ms
            || self.connect_timeout_ms == 0
            || self.delivery_timeout_ms == 0
            || self.retire_after_ms == 0
        {
            return bad(
                "federation",
                "times must be positive and reconnect_max_ms >= reconnect_initial_ms".into(),
            );
        }
        if self.queue_frames == 0
            || self.queue_bytes == 0
            || self.max_peers == 0
            || self.max_document_bytes == 0
            || self.jwks_max_age_secs < self.jwks_min_age_secs
        {
            return bad(
                "federation",
                "limits must be positive and jwks_max_age_secs >= jwks_min_age_secs".into(),
            );
        }
        for (domain, host) in &self.resolve {
            if !crate::identity::valid_domain(domain) || !crate::identity::valid_domain(host) {
                return bad(
                    "federation.resolve",
                    format!("{domain:?} = {host:?} is not a domain = host:port"),
                );
            }
        }
        for p in peers {
            if !crate::identity::valid_domain(&p.domain) || p.domain == own {
                return bad(
                    "peers.domain",
                    format!("{:?} is not another domain", p.domain),
                );
            }
            if !(p.url.starts_with("ws://") || p.url.starts_with("wss://")) {
                return bad(
                    "peers.url",
                    format!("{:?} must be a ws:// or wss:// URL", p.url),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_urls_follow_the_peer_url() {
        let p = PeerEntry {
            domain: "b.test".into(),
            url: "ws://127.0.0.1:9/federation".into(),
            jwks: None,
        };
        assert_eq!(p.jwks_url(), "http://127.0.0.1:9/.well-known/jwks.json");
        let p = PeerEntry {
            url: "wss://node.b.test/federation".into(),
            ..p
        };
        assert_eq!(p.jwks_url(), "https://node.b.test/.well-known/jwks.json");
    }

    #[test]
    fn bad_peers_are_refused() {
        let f = FederationSection::default();
        let own = PeerEntry {
            domain: "a.test".into(),
            url: "ws://x/federation".into(),
            jwks: None,
        };
        assert!(f.validate(std::slice::from_ref(&own), "a.test").is_err());
        let http = PeerEntry {
            domain: "b.test".into(),
            url: "http://x".into(),
            jwks: None,
        };
        assert!(f.validate(&[http], "a.test").is_err());
        assert!(f.validate(&[], "a.test").is_ok());
    }
}
