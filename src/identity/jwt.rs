//! Signing and checking the provider's JWTs with `jsonwebtoken` (EdDSA only).
//!
//! Checking is split in two so the caller can pick the key: [`peek`] reads the
//! unverified header and issuer (only to choose a key — nothing in them is
//! trusted), then [`verify`] checks signature, algorithm, issuer and audience
//! with `jsonwebtoken`, and the times and token kind against the caller's clock.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;

use super::config::MAX_TOKEN_LEN;
use super::error::IdentityError;
use super::keys::KeyEntry;
use super::model::{Claims, TokenUse};

/// Signs `claims` with `key` (header `alg: EdDSA`, `kid`, `typ: JWT`).
pub(crate) fn sign(key: &KeyEntry, claims: &Claims) -> Result<String, IdentityError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding)
        .map_err(|_| IdentityError::Internal("signing failed"))
}

/// The payload of a signed catalogue descriptor: the IdP that signed it, when,
/// and the descriptor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorClaims {
    /// `domain-idp://<D>`.
    pub iss: String,
    /// Signing time, seconds since the epoch.
    pub iat: u64,
    /// The descriptor.
    pub descriptor: hyperty_actors::catalogue::CatalogueDescriptor,
}

/// Signs a descriptor payload with `key` (a JWS: header `alg: EdDSA`, `kid`).
pub(crate) fn sign_descriptor(
    key: &KeyEntry,
    claims: &DescriptorClaims,
) -> Result<String, IdentityError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".to_owned());
    header.cty = Some("hyperty-descriptor".to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding)
        .map_err(|_| IdentityError::Internal("signing failed"))
}

/// Checks a signed descriptor against `jwks`: the key named by its `kid`, EdDSA
/// only, issued by `issuer` (`domain-idp://<D>`) when given. Answers the payload.
pub fn verify_descriptor(
    jws: &str,
    jwks: &super::keys::JwkSet,
    issuer: Option<&str>,
) -> Result<DescriptorClaims, IdentityError> {
    let peeked = peek(jws)?;
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kid == peeked.kid)
        .ok_or(IdentityError::InvalidToken(
            "signed by a key the domain does not publish",
        ))?;
    let key = jwk.decoding_key()?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_required_spec_claims::<&str>(&[]);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    if let Some(i) = issuer {
        v.set_issuer(&[i]);
    }
    v.leeway = 0;
    let claims = jsonwebtoken::decode::<DescriptorClaims>(jws, &key, &v)
        .map_err(|e| map_jwt_error(&e))?
        .claims;
    if issuer.is_some_and(|i| claims.iss != i) {
        return Err(IdentityError::WrongIssuer);
    }
    Ok(claims)
}

/// What the unverified token says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peeked {
    /// The `kid` of the header.
    pub(crate) kid: String,
    /// The `iss` claim, if any.
    pub(crate) iss: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct RawIssuer {
    #[serde(default)]
    iss: Option<String>,
}

fn segment<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IdentityError::InvalidToken("malformed token"))?;
    serde_json::from_slice(&bytes).map_err(|_| IdentityError::InvalidToken("malformed token"))
}

/// Reads the header's `alg` and `kid` and the payload's `iss`, without verifying
/// anything. Refuses oversized tokens, anything but three segments, any `alg`
/// but `EdDSA` (so `none` and HMAC/RSA confusion stop here) and a missing `kid`.
pub(crate) fn peek(token: &str) -> Result<Peeked, IdentityError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(IdentityError::InvalidToken("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdentityError::InvalidToken("malformed token"));
    };
    let header: RawHeader = segment(header)?;
    if header.alg != "EdDSA" {
        let alg = header.alg.chars().take(16).collect();
        return Err(IdentityError::UnsupportedAlgorithm(alg));
    }
    let kid = header
        .kid
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or(IdentityError::InvalidToken("token has no key id"))?;
    let iss = segment::<RawIssuer>(payload)?.iss;
    Ok(Peeked { kid, iss })
}

/// What a verified token must satisfy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect<'a> {
    /// The accepted `iss`.
    pub(crate) issuer: &'a str,
    /// The accepted `aud` values.
    pub(crate) audiences: &'a [&'a str],
    /// The accepted `token_use` values.
    pub(crate) uses: &'a [TokenUse],
    /// Now, seconds since the epoch.
    pub(crate) now: u64,
    /// Tolerated clock skew, seconds.
    pub(crate) leeway: u64,
}

fn map_jwt_error(e: &jsonwebtoken::errors::Error) -> IdentityError {
    match e.kind() {
        ErrorKind::InvalidSignature => IdentityError::InvalidToken("bad signature"),
        ErrorKind::InvalidIssuer => IdentityError::WrongIssuer,
        ErrorKind::InvalidAudience => IdentityError::WrongAudience,
        ErrorKind::InvalidAlgorithm => IdentityError::UnsupportedAlgorithm("not EdDSA".to_owned()),
        ErrorKind::ExpiredSignature => IdentityError::Expired,
        ErrorKind::ImmatureSignature => IdentityError::NotYetValid,
        ErrorKind::MissingRequiredClaim(_) => {
            IdentityError::InvalidToken("a required claim is missing")
        }
        _ => IdentityError::InvalidToken("malformed token"),
    }
}

/// Verifies `token` with `key` against `expect`.
pub(crate) fn verify(
    token: &str,
    key: &DecodingKey,
    expect: &Expect<'_>,
) -> Result<Claims, IdentityError> {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[expect.issuer]);
    v.set_audience(expect.audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // times are checked below against the injected clock
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    let claims = jsonwebtoken::decode::<Claims>(token, key, &v)
        .map_err(|e| map_jwt_error(&e))?
        .claims;
    if expect.now >= claims.exp.saturating_add(expect.leeway) {
        return Err(IdentityError::Expired);
    }
    let latest_start = expect.now.saturating_add(expect.leeway);
    if claims.nbf > latest_start || claims.iat > latest_start {
        return Err(IdentityError::NotYetValid);
    }
    if !expect.uses.contains(&claims.token_use) {
        return Err(IdentityError::WrongTokenUse {
            expected: expect.uses.first().map_or("other", |u| u.as_str()),
            found: claims.token_use.as_str(),
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_refuses_bad_shapes() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let payload = b64(r#"{"iss":"domain-idp://a.org"}"#);
        let none = format!("{}.{payload}.", b64(r#"{"alg":"none","kid":"k"}"#));
        assert_eq!(
            peek(&none),
            Err(IdentityError::UnsupportedAlgorithm("none".into()))
        );
        let hs = format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256","kid":"k"}"#));
        assert_eq!(
            peek(&hs),
            Err(IdentityError::UnsupportedAlgorithm("HS256".into()))
        );
        let no_kid = format!("{}.{payload}.c2ln", b64(r#"{"alg":"EdDSA"}"#));
        assert!(matches!(peek(&no_kid), Err(IdentityError::InvalidToken(_))));
        // a long multi-byte alg is cut on a character boundary
        let long = format!(
            "{}.{payload}.c2ln",
            b64(&format!(r#"{{"alg":"{}"}}"#, "é".repeat(40)))
        );
        assert!(
            matches!(peek(&long), Err(IdentityError::UnsupportedAlgorithm(a)) if a.chars().count() == 16)
        );
        for junk in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(peek(junk).is_err(), "{junk}");
        }
        let ok = format!("{}.{payload}.c2ln", b64(r#"{"alg":"EdDSA","kid":"k1"}"#));
        assert_eq!(
            peek(&ok),
            Ok(Peeked {
                kid: "k1".into(),
                iss: Some("domain-idp://a.org".into())
            })
        );
    }
}
