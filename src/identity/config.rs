//! Configuration of the identity provider ([`IdpConfig`]) and of the runtime's
//! identity module ([`IdmConfig`]). Both are serde sections with defaults for every
//! field and named, bounded limits; `validate` refuses unusable values.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::IdentityError;
use super::throttle::ThrottleConfig;

/// Audience of the identity assertions an identity module asks for when it binds
/// a user to a hyperty, and the audience it accepts by default: the assertion
/// says "this hyperty acts for this user" to any reTHINK runtime.
pub const DEFAULT_ASSERTION_AUDIENCE: &str = "urn:rethink:hyperty";

/// Longest token or assertion accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Longest password accepted, in bytes (bounds the work of one hash).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Argon2id parameters of password hashing.
///
/// The defaults are the OWASP recommendation (19 MiB, 2 passes, 1 lane). Stored
/// hashes carry their own parameters, so changing these only affects new
/// registrations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdfParams {
    /// Memory per hash, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// The cheapest parameters Argon2 allows (8 KiB, 1 pass). **Only for tests**:
    /// they make a hash take microseconds, which is exactly what an attacker wants.
    pub fn fast_insecure() -> Self {
        KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    pub(crate) fn params(&self) -> Result<argon2::Params, IdentityError> {
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| IdentityError::InvalidConfig(format!("kdf: {e}")))
    }

    #[cfg(test)]
    pub(crate) fn argon2(&self) -> Result<argon2::Argon2<'static>, IdentityError> {
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            self.params()?,
        ))
    }
}

/// Configuration of an [`IdentityProvider`](super::IdentityProvider) (the `[identity]`
/// section of a node).
///
/// ```
/// use hyperty::identity::IdpConfig;
///
/// let cfg: IdpConfig = serde_json::from_str(r#"{"id_token_lifetime_secs": 600}"#).unwrap();
/// assert_eq!(cfg.id_token_lifetime_secs, 600);
/// assert_eq!(cfg.max_users, 10_000);
/// assert_eq!(cfg.issuer_for("example.com"), "domain-idp://example.com");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdpConfig {
    /// Directory of the signing-key file and of the identity store (users,
    /// devices, password hashes, revocations), both owner-only. `None` keeps all
    /// of it in memory only (tests): every start then makes new keys, earlier
    /// tokens stop verifying and every user is gone.
    pub data_dir: Option<PathBuf>,
    /// `iss` of every token; `None` means `domain-idp://<domain>`.
    pub issuer: Option<String>,
    /// `aud` of ID and device tokens (who accepts them: the domain's messaging
    /// node); `None` means `domain://msg-node.<domain>`.
    pub audience: Option<String>,
    /// Public base URL of the node's HTTP side (e.g. `https://example.com`), used
    /// in `getLoginEndpoint` answers; `None` answers with paths only.
    pub public_url: Option<String>,
    /// Lifetime of a user's ID token, seconds.
    pub id_token_lifetime_secs: u64,
    /// Lifetime of a device (runtime) token, seconds.
    pub device_token_lifetime_secs: u64,
    /// Lifetime of an identity assertion, seconds (never beyond the ID token it
    /// was issued for).
    pub assertion_lifetime_secs: u64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
    pub clock_skew_secs: u64,
    /// Most registered users; a registration beyond answers 429. In a cluster,
    /// of the whole domain (counted in Redis).
    pub max_users: usize,
    /// Most registered devices; a registration beyond answers 429. In a
    /// cluster, of the whole domain.
    pub max_devices: usize,
    /// Most devices one user may register; a registration beyond answers 429
    /// (in a cluster, on all nodes together).
    pub max_devices_per_user: usize,
    /// Most revoked subjects remembered (deleted users and devices whose tokens
    /// may not have expired yet); a deletion beyond answers 429.
    pub max_revocations: usize,
    /// Usernames (of this domain) whose ID tokens may delete any user or device.
    pub admins: Vec<String>,
    /// Most signing keys kept (the current one plus retired ones whose tokens may
    /// still be valid); a rotation beyond answers 429.
    pub max_keys: usize,
    /// Password hashing threads: most hashes computed at once. Each thread keeps
    /// one `kdf.memory_kib` block for its life, so hashing never holds more than
    /// `max_concurrent_hashes × kdf.memory_kib`.
    pub max_concurrent_hashes: usize,
    /// Logins and registrations that may wait for a hashing thread; more at once
    /// answer 429.
    pub hash_queue: usize,
    /// Shortest password accepted, characters.
    pub min_password_len: usize,
    /// `Cache-Control: max-age` of `/.well-known/jwks.json`, seconds.
    pub jwks_max_age_secs: u64,
    /// Password hashing parameters.
    pub kdf: KdfParams,
    /// Backoff of failed logins per account and per source.
    pub login_throttle: ThrottleConfig,
}

impl Default for IdpConfig {
    fn default() -> Self {
        IdpConfig {
            data_dir: None,
            issuer: None,
            audience: None,
            public_url: None,
            id_token_lifetime_secs: 3_600,
            device_token_lifetime_secs: 86_400,
            assertion_lifetime_secs: 3_600,
            clock_skew_secs: 30,
            max_users: 10_000,
            max_devices: 10_000,
            max_devices_per_user: 16,
            max_revocations: 100_000,
            admins: Vec::new(),
            max_keys: 8,
            max_concurrent_hashes: 4,
            hash_queue: 64,
            min_password_len: 8,
            jwks_max_age_secs: 300,
            kdf: KdfParams::default(),
            login_throttle: ThrottleConfig::default(),
        }
    }
}

impl IdpConfig {
    /// The `iss` used for `domain`.
    pub fn issuer_for(&self, domain: &str) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("domain-idp://{domain}"))
    }

    /// The `aud` of ID and device tokens for `domain`.
    pub fn audience_for(&self, domain: &str) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| format!("domain://msg-node.{domain}"))
    }

    /// The longest lifetime of any token, seconds: how long a retired key must stay
    /// published.
    pub fn longest_lifetime_secs(&self) -> u64 {
        self.id_token_lifetime_secs
            .max(self.device_token_lifetime_secs)
            .max(self.assertion_lifetime_secs)
    }

    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let bad = |what: &str| Err(IdentityError::InvalidConfig(what.to_owned()));
        if self.id_token_lifetime_secs == 0
            || self.device_token_lifetime_secs == 0
            || self.assertion_lifetime_secs == 0
        {
            return bad("token lifetimes must be at least 1 second");
        }
        if self.max_users == 0
            || self.max_devices == 0
            || self.max_devices_per_user == 0
            || self.max_revocations == 0
        {
            return bad(
                "max_users, max_devices, max_devices_per_user and max_revocations must be at least 1",
            );
        }
        if let Some(a) = self
            .admins
            .iter()
            .find(|a| super::idp::normalise_username(a).as_deref() != Some(a.as_str()))
        {
            return Err(IdentityError::InvalidConfig(format!(
                "admins: {a:?} is not a lower-case username"
            )));
        }
        if self.max_keys < 2 {
            return bad("max_keys must be at least 2 (the current key and one retired key)");
        }
        if self.max_concurrent_hashes == 0 || self.hash_queue == 0 {
            return bad("max_concurrent_hashes and hash_queue must be at least 1");
        }
        if let Err(what) = self.login_throttle.validate() {
            return bad(what);
        }
        if self.min_password_len == 0 || self.min_password_len > MAX_PASSWORD_LEN {
            return bad("min_password_len must be between 1 and 1024");
        }
        if matches!(&self.issuer, Some(i) if i.is_empty())
            || matches!(&self.audience, Some(a) if a.is_empty())
        {
            return bad("issuer and audience must not be empty");
        }
        self.kdf.params().map(|_| ())
    }
}

/// Configuration of a runtime's [`IdentityModule`](super::IdentityModule).
///
/// ```
/// use hyperty::identity::IdmConfig;
///
/// let mut cfg = IdmConfig::default();
/// cfg.idp_endpoints.insert("a.org".into(), "http://127.0.0.1:8080".into());
/// assert_eq!(cfg.endpoint("a.org").as_deref(), Some("http://127.0.0.1:8080"));
/// assert_eq!(cfg.endpoint("b.org").as_deref(), Some("https://b.org"));
/// cfg.discover_unlisted_idps = false;
/// assert_eq!(cfg.endpoint("b.org"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdmConfig {
    /// Base URL of the identity provider of each domain (its JWKS is at
    /// `<base>/.well-known/jwks.json`, its login at `<base>/idp/login`).
    pub idp_endpoints: HashMap<String, String>,
    /// When true, a domain missing from `idp_endpoints` is reached at
    /// `https://<domain>`; when false it is an unknown, untrusted provider.
    pub discover_unlisted_idps: bool,
    /// Audience requested for the assertions bound to hyperties.
    pub assertion_audience: String,
    /// Audiences accepted when validating assertions (unless a request names one).
    pub accepted_audiences: Vec<String>,
    /// Whether hyperties without a bound identity send
    /// `body.identity = {userProfile:{guid:"anonymous"}}` (the reference
    /// behaviour) instead of no `identity` at all. Either way a hyperty cannot send
    /// an identity of its own making.
    pub mark_anonymous: bool,
    /// How long a fetched JWKS is used, seconds.
    pub jwks_ttl_secs: u64,
    /// Least time between two fetches of one provider's JWKS (a token with an
    /// unknown `kid` causes at most one refetch per interval), seconds.
    pub jwks_refetch_interval_secs: u64,
    /// Most providers whose keys are cached (the oldest fetch is evicted).
    pub max_cached_idps: usize,
    /// Most keys taken from one JWKS.
    pub max_keys_per_idp: usize,
    /// Largest JWKS document read, bytes.
    pub max_jwks_bytes: usize,
    /// Timeout of each HTTP request to a provider, milliseconds.
    pub fetch_timeout_ms: u64,
    /// Most users logged in at this runtime (several users may share a device).
    pub max_sessions: usize,
    /// Most hyperty ↔ identity bindings.
    pub max_bindings: usize,
    /// A binding whose assertion expires within this margin is renewed, seconds.
    pub refresh_margin_secs: u64,
    /// How often bindings are checked for renewal, seconds.
    pub refresh_interval_secs: u64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
    pub clock_skew_secs: u64,
}

impl Default for IdmConfig {
    fn default() -> Self {
        IdmConfig {
            idp_endpoints: HashMap::new(),
            discover_unlisted_idps: true,
            assertion_audience: DEFAULT_ASSERTION_AUDIENCE.to_owned(),
            accepted_audiences: vec![DEFAULT_ASSERTION_AUDIENCE.to_owned()],
            mark_anonymous: true,
            jwks_ttl_secs: 300,
            jwks_refetch_interval_secs: 10,
            max_cached_idps: 64,
            max_keys_per_idp: 16,
            max_jwks_bytes: 64 * 1024,
            fetch_timeout_ms: 5_000,
            max_sessions: 64,
            max_bindings: 10_000,
            refresh_margin_secs: 120,
            refresh_interval_secs: 30,
            clock_skew_secs: 30,
        }
    }
}

impl IdmConfig {
    /// The base URL of `idp`'s provider, or `None` if it is not trusted.
    pub fn endpoint(&self, idp: &str) -> Option<String> {
        match self.idp_endpoints.get(idp) {
            Some(base) => Some(base.trim_end_matches('/').to_owned()),
            None if self.discover_unlisted_idps && valid_domain(idp) => {
                Some(format!("https://{idp}"))
            }
            None => None,
        }
    }

    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let bad = |what: &str| Err(IdentityError::InvalidConfig(what.to_owned()));
        if self.jwks_ttl_secs == 0 || self.refresh_interval_secs == 0 {
            return bad("jwks_ttl_secs and refresh_interval_secs must be at least 1");
        }
        if self.max_cached_idps == 0
            || self.max_keys_per_idp == 0
            || self.max_jwks_bytes == 0
            || self.max_sessions == 0
            || self.max_bindings == 0
        {
            return bad("cache and table limits must be at least 1");
        }
        if self.fetch_timeout_ms == 0 {
            return bad("fetch_timeout_ms must be at least 1");
        }
        if self.assertion_audience.is_empty() || self.accepted_audiences.is_empty() {
            return bad("assertion_audience and accepted_audiences must not be empty");
        }
        for (domain, base) in &self.idp_endpoints {
            if !valid_domain(domain) {
                return Err(IdentityError::InvalidConfig(format!(
                    "idp_endpoints: {domain:?} is not a domain"
                )));
            }
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(IdentityError::InvalidConfig(format!(
                    "idp_endpoints.{domain}: the base URL must start with http:// or https://"
                )));
            }
        }
        Ok(())
    }
}

/// A plausible DNS name (or `host:port`): letters, digits, `-`, `.`, `:`.
pub(crate) fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
        && !d.starts_with(['.', '-'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(IdpConfig::default().validate().is_ok());
        assert!(IdmConfig::default().validate().is_ok());
        let fast = IdpConfig {
            kdf: KdfParams::fast_insecure(),
            ..IdpConfig::default()
        };
        assert!(fast.validate().is_ok());
    }

    #[test]
    fn bad_values_are_refused() {
        for cfg in [
            IdpConfig {
                id_token_lifetime_secs: 0,
                ..Default::default()
            },
            IdpConfig {
                max_keys: 1,
                ..Default::default()
            },
            IdpConfig {
                kdf: KdfParams {
                    memory_kib: 1,
                    iterations: 1,
                    parallelism: 1,
                },
                ..Default::default()
            },
            IdpConfig {
                issuer: Some(String::new()),
                ..Default::default()
            },
            IdpConfig {
                hash_queue: 0,
                ..Default::default()
            },
            IdpConfig {
                max_devices_per_user: 0,
                ..Default::default()
            },
            IdpConfig {
                admins: vec!["Root".into()],
                ..Default::default()
            },
            IdpConfig {
                login_throttle: ThrottleConfig {
                    base_backoff_ms: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
        ] {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        let mut idm = IdmConfig::default();
        idm.idp_endpoints
            .insert("a.org".into(), "ftp://a.org".into());
        assert!(idm.validate().is_err());
        let idm = IdmConfig {
            accepted_audiences: vec![],
            ..Default::default()
        };
        assert!(idm.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<IdpConfig>(r#"{"nope": 1}"#).is_err());
        assert!(serde_json::from_str::<IdmConfig>(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn endpoints() {
        let mut cfg = IdmConfig::default();
        cfg.idp_endpoints
            .insert("a.org".into(), "http://127.0.0.1:1/".into());
        assert_eq!(cfg.endpoint("a.org").as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(cfg.endpoint("b.org").as_deref(), Some("https://b.org"));
        assert_eq!(cfg.endpoint("evil/path"), None);
        assert_eq!(cfg.endpoint(""), None);
    }
}
