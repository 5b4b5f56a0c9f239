//! [`TokenVerifier`]: the provider's synchronous token check, for the node's hot
//! path (session `open`) and the provider's own handlers.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hyperty_actors::clock::Clock;

use super::error::IdentityError;
use super::jwt::{self, Expect};
use super::keys::{JwkSet, PublicKeys};
use super::model::{Claims, TokenUse, VerifiedIdentity};

struct Inner {
    domain: String,
    issuer: String,
    audience: String,
    leeway: u64,
    clock: Arc<dyn Clock>,
    keys: RwLock<Arc<PublicKeys>>,
    /// Subject URL → unix time at or before which its tokens were issued are
    /// refused (deleted users and devices).
    revoked: RwLock<HashMap<String, u64>>,
    /// Bumped on every revocation.
    epoch: AtomicU64,
}

/// Checks the tokens of one identity provider without a message hop: signature
/// (EdDSA only — `none`, HMAC and RSA tokens are refused before any key is used),
/// `kid`, issuer, audience, expiry, not-before and token kind.
///
/// It is cheap to clone and shares its key set and its revocations with the
/// [`IdentityProvider`](super::IdentityProvider) that made it, so a key rotation
/// or a deletion is seen by every clone at once.
///
/// **Revocation.** Deleting a user or a device revokes its subject (`user://<D>/<name>`,
/// `hyperty-runtime://<D>/<device>`): every token of it issued up to then — ID,
/// device and assertion tokens, and ID tokens naming a deleted device — is
/// refused with [`IdentityError::Revoked`]. A holder of live sessions learns of
/// revocations cheaply: [`revocation_epoch`](Self::revocation_epoch) changes on
/// every one, and [`is_revoked`](Self::is_revoked) tells whether a session's
/// subject, authenticated by a token issued at a given time, has been revoked
/// since. (A name deleted and registered again within the same second has the
/// new owner's tokens of that second refused too; they log in again.) Get one with
/// [`IdentityProvider::verifier`](super::IdentityProvider::verifier) before starting
/// the actor.
///
/// ```
/// use hyperty::identity::{IdentityError, IdentityProvider, IdpConfig};
///
/// let idp = IdentityProvider::new("example.com", IdpConfig::default()).unwrap();
/// let verifier = idp.verifier();
/// assert_eq!(verifier.issuer(), "domain-idp://example.com");
/// assert!(matches!(
///     verifier.verify_token("not.a.token"),
///     Err(IdentityError::InvalidToken(_))
/// ));
/// ```
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub(crate) fn new(
        domain: &str,
        issuer: String,
        audience: String,
        leeway: u64,
        clock: Arc<dyn Clock>,
        keys: PublicKeys,
    ) -> TokenVerifier {
        TokenVerifier {
            inner: Arc::new(Inner {
                domain: domain.to_owned(),
                issuer,
                audience,
                leeway,
                clock,
                keys: RwLock::new(Arc::new(keys)),
                revoked: RwLock::new(HashMap::new()),
                epoch: AtomicU64::new(0),
            }),
        }
    }

    /// Replaces the key set (after a rotation or prune).
    pub(crate) fn publish(&self, keys: PublicKeys) {
        *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    fn keys(&self) -> Arc<PublicKeys> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Refuses every token of `subject` issued at or before `at` (unix seconds);
    /// false (and the epoch unchanged) when it was refused up to `at` already.
    pub(crate) fn revoke(&self, subject: &str, at: u64) -> bool {
        let mut r = self
            .inner
            .revoked
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match r.get_mut(subject) {
            Some(known) if *known >= at => return false,
            Some(known) => *known = at,
            None => {
                r.insert(subject.to_owned(), at);
            }
        }
        drop(r);
        self.inner.epoch.fetch_add(1, Ordering::Release);
        true
    }

    /// Forgets revocations at or before `before` (their tokens have all expired);
    /// answers the subjects forgotten.
    pub(crate) fn forget_revocations(&self, before: u64) -> Vec<String> {
        let mut r = self
            .inner
            .revoked
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let old: Vec<String> = r
            .iter()
            .filter(|(_, at)| **at <= before)
            .map(|(s, _)| s.clone())
            .collect();
        for s in &old {
            r.remove(s);
        }
        old
    }

    /// Number of revoked subjects remembered.
    pub(crate) fn revocations(&self) -> usize {
        self.inner
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// A counter that changes whenever a subject is revoked: a node compares it
    /// with the value it saw last, and only when it changed asks
    /// [`is_revoked`](Self::is_revoked) about its live sessions.
    pub fn revocation_epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    /// Whether `subject` (a user or runtime URL of this provider) was revoked —
    /// its user or device deleted — at or after `issued_at`, the `iat` of the
    /// token that authenticated it.
    pub fn is_revoked(&self, subject: &str, issued_at: u64) -> bool {
        self.inner
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(subject)
            .is_some_and(|at| issued_at <= *at)
    }

    /// Whether a token of `subject`, issued at `issued_at` for `device` (a device
    /// id, the token's `device` claim), was revoked since: its subject or its
    /// device deleted.
    pub fn is_token_revoked(&self, subject: &str, device: Option<&str>, issued_at: u64) -> bool {
        self.is_revoked(subject, issued_at)
            || device.is_some_and(|d| {
                let url = format!("hyperty-runtime://{}/{d}", self.inner.domain);
                self.is_revoked(&url, issued_at)
            })
    }

    fn refuse_revoked(&self, claims: &Claims) -> Result<(), IdentityError> {
        if self.is_token_revoked(&claims.sub, claims.device.as_deref(), claims.iat) {
            return Err(IdentityError::Revoked);
        }
        Ok(())
    }

    /// The provider's domain.
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// The `iss` of every token of this provider.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The `aud` of ID and device tokens (the domain's messaging node).
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// Seconds since the epoch, on the provider's clock.
    pub fn now(&self) -> u64 {
        self.inner.clock.now_secs()
    }

    /// The published keys (current and still-valid retired ones).
    pub fn jwks(&self) -> JwkSet {
        self.keys().jwks(self.now())
    }

    /// Verifies a token presented to open a session: a user's ID token or a
    /// device (runtime) token of this provider, meant for the node. Every error
    /// maps to 401 through [`ToResponseCode`](hyperty_actors::error::ToResponseCode).
    pub fn verify_token(&self, token: &str) -> Result<Claims, IdentityError> {
        self.check(
            token,
            &[self.inner.audience.as_str()],
            &[TokenUse::Id, TokenUse::Device],
        )
    }

    /// Verifies a user's ID token only.
    pub fn verify_id_token(&self, token: &str) -> Result<Claims, IdentityError> {
        self.check(token, &[self.inner.audience.as_str()], &[TokenUse::Id])
    }

    /// Verifies a device token only.
    pub fn verify_device_token(&self, token: &str) -> Result<Claims, IdentityError> {
        self.check(token, &[self.inner.audience.as_str()], &[TokenUse::Device])
    }

    /// Verifies an identity assertion issued by this provider for `audience`.
    pub fn verify_assertion(
        &self,
        assertion: &str,
        audience: &str,
    ) -> Result<VerifiedIdentity, IdentityError> {
        let claims = self.check(assertion, &[audience], &[TokenUse::Assertion])?;
        VerifiedIdentity::from_claims(&self.inner.domain, &claims)
    }

    fn check(
        &self,
        token: &str,
        audiences: &[&str],
        uses: &[TokenUse],
    ) -> Result<Claims, IdentityError> {
        let peeked = jwt::peek(token)?;
        let now = self.now();
        let keys = self.keys();
        let key = keys
            .get(&peeked.kid, now)
            .ok_or_else(|| IdentityError::UnknownKey(short(&peeked.kid)))?;
        let claims = jwt::verify(
            token,
            key,
            &Expect {
                issuer: &self.inner.issuer,
                audiences,
                uses,
                now,
                leeway: self.inner.leeway,
            },
        )?;
        self.refuse_revoked(&claims)?;
        Ok(claims)
    }
}

/// A `kid` or name from the wire, shortened (on a character boundary) for
/// error texts.
pub(crate) fn short(kid: &str) -> String {
    kid.chars().take(64).collect()
}
