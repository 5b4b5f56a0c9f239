//! The hook through which policies check identity assertions.
//!
//! The PEP never verifies a token itself: it hands `body.identity` (rethink-wire.md
//! §7: `{userProfile:{userURL,…}, idp, assertion, …}`) to an [`AssertionVerifier`].
//! The identity module implements it over its cached IdP keys; it is synchronous
//! because it runs on the bus's hot path. Without one, [`RefuseAll`] is used, so
//! `require-assertion` obligations, `asserted = true` conditions and `users`
//! targets fail closed.
//!
//! ```
//! use hyperty_actors::policy::{AssertionVerifier, VerifiedIdentity};
//! use serde_json::{json, Value};
//!
//! /// Trusts any identity whose `idp` is `idp.a.org` (for tests only).
//! struct TrustIdp;
//! impl AssertionVerifier for TrustIdp {
//!     fn verify(&self, identity: &Value, _sender_domain: &str) -> Result<VerifiedIdentity, String> {
//!         if identity["idp"] != "idp.a.org" {
//!             return Err("unknown identity provider".into());
//!         }
//!         let user = identity["userProfile"]["userURL"].as_str().ok_or("no userURL")?;
//!         Ok(VerifiedIdentity { user: user.to_owned(), domain: "a.org".to_owned() })
//!     }
//! }
//!
//! let id = json!({"idp": "idp.a.org", "userProfile": {"userURL": "user://a.org/alice"}});
//! assert_eq!(TrustIdp.verify(&id, "a.org").unwrap().user, "user://a.org/alice");
//! ```

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// An identity the verifier vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The user's URL (`user://<idp-domain>/<name>`), matched by `users` targets.
    pub user: String,
    /// The domain whose identity provider issued the assertion.
    pub domain: String,
}

/// Checks an identity assertion carried in a message's `body.identity`.
pub trait AssertionVerifier: Send + Sync + 'static {
    /// Verifies `identity` carried by a sender of `sender_domain`; the error says why not.
    fn verify(&self, identity: &Value, sender_domain: &str) -> Result<VerifiedIdentity, String>;
}

impl fmt::Debug for dyn AssertionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AssertionVerifier")
    }
}

/// The verifier used until one is installed: accepts nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefuseAll;

impl AssertionVerifier for RefuseAll {
    fn verify(&self, _: &Value, _: &str) -> Result<VerifiedIdentity, String> {
        Err("no assertion verifier is installed".to_owned())
    }
}

/// A shared verifier verifies like the one it points to.
impl<T: AssertionVerifier + ?Sized> AssertionVerifier for Arc<T> {
    fn verify(
        &self,
        identity: &serde_json::Value,
        sender_domain: &str,
    ) -> Result<VerifiedIdentity, String> {
        (**self).verify(identity, sender_domain)
    }
}
