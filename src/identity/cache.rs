//! The identity module's cache of other providers' keys, and [`AssertionCheck`],
//! the synchronous assertion verifier that reads only that cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use hyperty_actors::address::AddressKind;
use hyperty_actors::message::Message;
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use tokio::sync::mpsc;

use hyperty_actors::clock::Clock;

use super::config::IdmConfig;
use super::error::IdentityError;
use super::jwt::{self, Expect};
use super::model::{TokenUse, VerifiedIdentity};
use super::verifier::short;

struct Entry {
    keys: HashMap<String, DecodingKey>,
    /// Keys are used until then (0: none fetched yet).
    expires_at: u64,
    /// Last fetch started (successful or not).
    last_attempt: u64,
}

/// Keys of the providers met so far, by provider domain. Written by the identity
/// module after each fetch, read by every [`AssertionCheck`].
pub(crate) struct JwksCache {
    entries: RwLock<HashMap<String, Entry>>,
    max_idps: usize,
    ttl: u64,
}

/// Why the cache could not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No fresh key set for the provider.
    NoKeys,
    /// A fresh key set without the token's `kid` (perhaps a rotation).
    UnknownKid(String),
}

enum Lookup {
    Key(DecodingKey),
    Miss(Miss),
}

impl JwksCache {
    pub(crate) fn new(max_idps: usize, ttl: u64) -> JwksCache {
        JwksCache {
            entries: RwLock::new(HashMap::new()),
            max_idps,
            ttl,
        }
    }

    fn lookup(&self, idp: &str, kid: &str, now: u64) -> Lookup {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        match entries.get(idp) {
            Some(e) if now < e.expires_at => match e.keys.get(kid) {
                Some(k) => Lookup::Key(k.clone()),
                None => Lookup::Miss(Miss::UnknownKid(short(kid))),
            },
            _ => Lookup::Miss(Miss::NoKeys),
        }
    }

    /// True if a fetch for `idp` may start now: none started within `interval`.
    pub(crate) fn fetch_due(&self, idp: &str, now: u64, interval: u64) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(idp)
            .is_none_or(|e| now >= e.last_attempt.saturating_add(interval))
    }

    fn entry_mut<'a>(&self, entries: &'a mut HashMap<String, Entry>, idp: &str) -> &'a mut Entry {
        if !entries.contains_key(idp) && entries.len() >= self.max_idps {
            // evict the provider fetched least recently
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_attempt)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.entry(idp.to_owned()).or_insert_with(|| Entry {
            keys: HashMap::new(),
            expires_at: 0,
            last_attempt: 0,
        })
    }

    /// Records that a fetch for `idp` starts now.
    pub(crate) fn mark_attempt(&self, idp: &str, now: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.entry_mut(&mut entries, idp).last_attempt = now;
    }

    /// Stores freshly fetched keys of `idp`.
    pub(crate) fn store(&self, idp: &str, keys: HashMap<String, DecodingKey>, now: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let e = self.entry_mut(&mut entries, idp);
        e.keys = keys;
        e.expires_at = now.saturating_add(self.ttl);
    }

    /// Number of providers cached.
    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A request to fetch a provider's keys in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prefetch(pub(crate) String);

/// Verifies identity assertions synchronously, using only keys the identity
/// module has already fetched and cached: for the policy engine's
/// "require an identity assertion" obligation, which runs inside the bus pipeline
/// and may not wait for the network.
///
/// When keys are missing it answers [`IdentityError::KeysNotCached`] and asks the
/// identity module to fetch them in the background, so a later message passes.
/// Every check covers: EdDSA signature by a key of the issuer, issuer
/// `domain-idp://<idp>` of a trusted provider, audience (one of
/// [`accepted_audiences`](IdmConfig::accepted_audiences) unless given),
/// expiry/not-before, token kind `assertion`, the user belonging to the
/// provider's domain, and the unsigned `userProfile.userURL` matching the signed
/// subject.
///
/// ```
/// use hyperty::identity::{IdentityError, IdmConfig, IdmHandle};
/// use hyperty::prelude::*;
/// use serde_json::json;
///
/// # #[actix::main] async fn main() {
/// let rt = Runtime::start(RuntimeConfig::new("example.com")).unwrap();
/// let idm = IdmHandle::start(rt.bus().clone(), IdmConfig::default()).unwrap();
/// let check = idm.verifier();
/// // no assertion at all
/// let anonymous = json!({"userProfile": {"guid": "anonymous"}});
/// assert_eq!(
///     check.verify(&anonymous, "example.com"),
///     Err(IdentityError::NoAssertion)
/// );
/// # }
/// ```
#[derive(Clone)]
pub struct AssertionCheck {
    cache: Arc<JwksCache>,
    config: Arc<IdmConfig>,
    clock: Arc<dyn Clock>,
    prefetch: mpsc::Sender<Prefetch>,
}

impl fmt::Debug for AssertionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionCheck")
            .field("cached_idps", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// The provider domain of an issuer `domain-idp://<domain>`.
fn idp_of(iss: Option<&str>) -> Result<&str, IdentityError> {
    iss.and_then(|i| i.strip_prefix("domain-idp://"))
        .filter(|d| super::config::valid_domain(d))
        .ok_or(IdentityError::InvalidToken(
            "the issuer is not a domain-idp:// provider",
        ))
}

impl AssertionCheck {
    pub(crate) fn new(
        cache: Arc<JwksCache>,
        config: Arc<IdmConfig>,
        clock: Arc<dyn Clock>,
        prefetch: mpsc::Sender<Prefetch>,
    ) -> AssertionCheck {
        AssertionCheck {
            cache,
            config,
            clock,
            prefetch,
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_secs()
    }

    /// Verifies with cached keys; a miss names the provider and what is missing.
    pub(crate) fn check_cached(
        &self,
        assertion: &str,
        idp_hint: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Result<VerifiedIdentity, (String, Miss)>, IdentityError> {
        let peeked = jwt::peek(assertion)?;
        let idp = idp_of(peeked.iss.as_deref())?;
        if idp_hint.is_some_and(|hint| hint != idp) {
            return Err(IdentityError::IdentityMismatch(
                "the identity names another provider than the assertion's issuer",
            ));
        }
        if self.config.endpoint(idp).is_none() {
            return Err(IdentityError::UnknownIdp(idp.to_owned()));
        }
        let now = self.now();
        let key = match self.cache.lookup(idp, &peeked.kid, now) {
            Lookup::Key(k) => k,
            Lookup::Miss(m) => return Ok(Err((idp.to_owned(), m))),
        };
        let issuer = format!("domain-idp://{idp}");
        let accepted: Vec<&str> = match audience {
            Some(a) => vec![a],
            None => self
                .config
                .accepted_audiences
                .iter()
                .map(String::as_str)
                .collect(),
        };
        let claims = jwt::verify(
            assertion,
            &key,
            &Expect {
                issuer: &issuer,
                audiences: &accepted,
                uses: &[TokenUse::Assertion],
                now,
                leeway: self.config.clock_skew_secs,
            },
        )?;
        VerifiedIdentity::from_claims(idp, &claims).map(Ok)
    }

    /// Verifies a bare assertion for `audience` (default: the accepted
    /// audiences) with cached keys only.
    pub fn verify_assertion(
        &self,
        assertion: &str,
        audience: Option<&str>,
    ) -> Result<VerifiedIdentity, IdentityError> {
        match self.check_cached(assertion, None, audience)? {
            Ok(v) => Ok(v),
            Err((idp, _)) => {
                // best effort: a full queue means fetches are already pending
                let _ = self.prefetch.try_send(Prefetch(idp.clone()));
                Err(IdentityError::KeysNotCached(idp))
            }
        }
    }

    fn verify_identity(&self, identity: &Value) -> Result<VerifiedIdentity, IdentityError> {
        let assertion = identity
            .get("assertion")
            .and_then(Value::as_str)
            .ok_or(IdentityError::NoAssertion)?;
        let hint = identity.get("idp").and_then(Value::as_str);
        let verified = match self.check_cached(assertion, hint, None)? {
            Ok(v) => v,
            Err((idp, _)) => {
                let _ = self.prefetch.try_send(Prefetch(idp.clone()));
                return Err(IdentityError::KeysNotCached(idp));
            }
        };
        let claimed = identity
            .get("userProfile")
            .and_then(|p| p.get("userURL"))
            .and_then(Value::as_str);
        if claimed.is_some_and(|u| u != verified.user.as_str()) {
            return Err(IdentityError::IdentityMismatch(
                "userProfile.userURL differs from the assertion's subject",
            ));
        }
        Ok(verified)
    }

    /// Verifies a `body.identity` object sent by a hyperty of `sender_domain`
    /// (the domain of the message's `from`): the assertion must be valid and
    /// bind the user to a hyperty of that domain.
    pub fn verify(
        &self,
        identity: &Value,
        sender_domain: &str,
    ) -> Result<VerifiedIdentity, IdentityError> {
        let v = self.verify_identity(identity)?;
        match v.hyperty.as_ref().and_then(|h| h.domain()) {
            Some(d) if d == sender_domain => Ok(v),
            _ => Err(IdentityError::IdentityMismatch(
                "the assertion binds a hyperty of another domain",
            )),
        }
    }

    /// Verifies a `body.identity` object sent by exactly the hyperty `sender`.
    pub fn verify_sender(
        &self,
        identity: &Value,
        sender: &str,
    ) -> Result<VerifiedIdentity, IdentityError> {
        let v = self.verify_identity(identity)?;
        match &v.hyperty {
            Some(h) if h.as_str() == sender => Ok(v),
            _ => Err(IdentityError::IdentityMismatch(
                "the assertion binds another hyperty than the sender",
            )),
        }
    }

    /// Verifies the `body.identity` of `msg` against its sending hyperty: `from`,
    /// or `body.source` when `from` is a data object (updates of a reporter).
    pub fn verify_message(&self, msg: &Message) -> Result<VerifiedIdentity, IdentityError> {
        let identity = msg
            .body
            .identity
            .as_ref()
            .ok_or(IdentityError::NoAssertion)?;
        let sender = match (msg.from.kind(), &msg.body.source) {
            (AddressKind::DataObject, Some(source)) => source,
            _ => &msg.from,
        };
        self.verify_sender(identity, sender.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_expires() {
        let cache = JwksCache::new(2, 10);
        cache.store("a.org", HashMap::new(), 0);
        cache.mark_attempt("a.org", 1);
        cache.store("b.org", HashMap::new(), 2);
        cache.mark_attempt("b.org", 2);
        cache.mark_attempt("c.org", 3);
        assert_eq!(cache.len(), 2);
        // a.org (attempted least recently) was evicted
        assert!(cache.fetch_due("a.org", 3, 100));
        assert!(!cache.fetch_due("c.org", 5, 10));
        assert!(cache.fetch_due("c.org", 13, 10));
        assert!(matches!(
            cache.lookup("b.org", "k", 5),
            Lookup::Miss(Miss::UnknownKid(_))
        ));
        assert!(matches!(
            cache.lookup("b.org", "k", 12),
            Lookup::Miss(Miss::NoKeys)
        ));
    }

    #[test]
    fn issuers() {
        assert_eq!(idp_of(Some("domain-idp://a.org")), Ok("a.org"));
        assert!(idp_of(Some("https://a.org")).is_err());
        assert!(idp_of(Some("domain-idp://a.org/x")).is_err());
        assert!(idp_of(None).is_err());
    }
}

/// [`AssertionCheck`] as the policy engine's verifier: `require-assertion`
/// obligations and `users` targets are decided on assertions checked against
/// cached keys only (a miss fails closed and starts a background fetch).
#[derive(Debug, Clone)]
pub struct PolicyVerifier(pub AssertionCheck);

impl hyperty_actors::policy::AssertionVerifier for PolicyVerifier {
    fn verify(
        &self,
        identity: &Value,
        sender_domain: &str,
    ) -> Result<hyperty_actors::policy::VerifiedIdentity, String> {
        self.0
            .verify(identity, sender_domain)
            .map(|v| hyperty_actors::policy::VerifiedIdentity {
                user: v.user.to_string(),
                domain: v.idp,
            })
            .map_err(|e| e.to_string())
    }
}
