//! Peer tokens: how one domain's node proves its domain to another's.
//!
//! A peer token is an EdDSA JWT signed by the sending domain's identity provider
//! ([`IssuePeerToken`](super::IssuePeerToken)): `iss` = `domain-idp://<D>`, `sub` =
//! `domain://msg-node.<D>`, `aud` = `domain://msg-node.<receiver>`, `token_use:
//! peer`, a lifetime of seconds. The receiver checks it with D's published keys
//! (fetched over HTTP by the federation component), never with its own.

use std::collections::HashMap;

use jsonwebtoken::DecodingKey;

use super::error::IdentityError;
use super::jwt::{self, Expect};
use super::model::{Claims, TokenUse};

/// What a peer token says about itself before it is verified: the `kid` and the
/// domain of its issuer (only to choose the keys).
pub(crate) fn claimed_domain(token: &str) -> Result<(String, String), IdentityError> {
    let peeked = jwt::peek(token)?;
    let domain = peeked
        .iss
        .as_deref()
        .and_then(|i| i.strip_prefix("domain-idp://"))
        .filter(|d| super::config::valid_domain(d))
        .ok_or(IdentityError::InvalidToken(
            "the issuer is not a domain-idp:// provider",
        ))?;
    Ok((peeked.kid, domain.to_owned()))
}

/// Verifies a peer token from `peer` for the node of `ours`, with `peer`'s keys.
pub(crate) fn verify(
    token: &str,
    keys: &HashMap<String, DecodingKey>,
    peer: &str,
    ours: &str,
    now: u64,
    leeway: u64,
) -> Result<Claims, IdentityError> {
    let (kid, claimed) = claimed_domain(token)?;
    if claimed != peer {
        return Err(IdentityError::InvalidToken(
            "the token is issued by another domain",
        ));
    }
    let key = keys.get(&kid).ok_or(IdentityError::InvalidToken(
        "the token's key is not in the peer's key set",
    ))?;
    let issuer = format!("domain-idp://{peer}");
    let audience = format!("domain://msg-node.{ours}");
    let claims = jwt::verify(
        token,
        key,
        &Expect {
            issuer: &issuer,
            audiences: &[&audience],
            uses: &[TokenUse::Peer],
            now,
            leeway,
        },
    )?;
    if claims.sub != format!("domain://msg-node.{peer}") {
        return Err(IdentityError::InvalidToken(
            "the token's subject is not the peer's node",
        ));
    }
    Ok(claims)
}
