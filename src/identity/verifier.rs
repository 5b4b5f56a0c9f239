//! [`TokenVerifier`]: the provider's synchronous token check, for the node's hot
//! path (session `open`) and the provider's own handlers.

use std::fmt;
use std::sync::{Arc, RwLock};

use crate::domain_registry::Clock;

use super::error::IdentityError;
use super::jwt::{self, Expect};
use super::keys::{JwkSet, PublicKeys};
use super::model::{unix_now, Claims, TokenUse, VerifiedIdentity};

struct Inner {
    domain: String,
    issuer: String,
    audience: String,
    leeway: u64,
    clock: Arc<dyn Clock>,
    keys: RwLock<Arc<PublicKeys>>,
}

/// Checks the tokens of one identity provider without a message hop: signature
/// (EdDSA only — `none`, HMAC and RSA tokens are refused before any key is used),
/// `kid`, issuer, audience, expiry, not-before and token kind.
///
/// It is cheap to clone and shares its key set with the
/// [`IdentityProvider`](super::IdentityProvider) that made it, so a key rotation is
/// seen by every clone at once. Get one with
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
        unix_now(self.inner.clock.as_ref())
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
        jwt::verify(
            token,
            key,
            &Expect {
                issuer: &self.inner.issuer,
                audiences,
                uses,
                now,
                leeway: self.inner.leeway,
            },
        )
    }
}

/// A `kid` or name from the wire, shortened (on a character boundary) for
/// error texts.
pub(crate) fn short(kid: &str) -> String {
    kid.chars().take(64).collect()
}
