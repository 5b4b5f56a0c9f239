//! The values identity components exchange: credentials, token claims, user
//! profiles and verified identities.

use std::fmt;

use hyperty_actors::address::{HypertyUrl, UserUrl};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::IdentityError;

/// Longest profile field (`cn`, `email`, `locale`), characters.
pub const MAX_PROFILE_FIELD_LEN: usize = 256;
/// Longest `avatar` URL, characters.
pub const MAX_AVATAR_LEN: usize = 2048;
/// Longest username, characters.
pub const MAX_USERNAME_LEN: usize = 64;
/// Longest audience or device label, characters.
pub const MAX_LABEL_LEN: usize = 256;

/// A password, device secret or bearer token: its `Debug` never shows the value,
/// so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value. Call it only where the secret is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

/// What a token is for. Each verifier accepts only its kinds, so an assertion
/// cannot open a session and an ID token cannot pass as an assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// A user's ID token, from `Login`.
    Id,
    /// A device's (runtime's) token, from `DeviceToken`.
    Device,
    /// An identity assertion binding a user to a hyperty, from `IssueAssertion`.
    Assertion,
    /// A node proving its domain to another domain's node, from `IssuePeerToken`
    /// (`sub` = `domain://msg-node.<D>`, `aud` = `domain://msg-node.<peer>`).
    Peer,
}

impl TokenUse {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Id => "id",
            TokenUse::Device => "device",
            TokenUse::Assertion => "assertion",
            TokenUse::Peer => "peer",
        }
    }
}

/// The claims of every token the identity provider signs (EdDSA JWTs).
///
/// | claim | ID token | device token | assertion |
/// |---|---|---|---|
/// | `iss` | `domain-idp://<D>` | same | same |
/// | `sub` | `user://<D>/<username>` | `hyperty-runtime://<D>/<device>` | `user://<D>/<username>` |
/// | `aud` | the node (`domain://msg-node.<D>`) | the node | the audience asked for |
/// | `exp`, `iat`, `nbf`, `jti` | ✔ | ✔ | ✔ |
/// | `token_use` | `id` | `device` | `assertion` |
/// | `device` | the device logged in on, if any | the device id | the device of the ID token |
/// | `hyperty` | — | — | the hyperty URL the user is bound to |
/// | `preferred_username`, `name`, `picture`, `email`, `locale` | profile | — | profile |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: a user URL, or a runtime URL for device tokens.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch.
    #[serde(default)]
    pub nbf: u64,
    /// Unique token id.
    pub jti: String,
    /// What the token is for.
    pub token_use: TokenUse,
    /// Device id (see the table above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The hyperty an assertion binds the user to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperty: Option<String>,
    /// The username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Common name (profile `cn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Avatar URL (profile `avatar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    /// E-mail (profile `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Locale (profile `locale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

impl Claims {
    /// The subject as a user URL (ID tokens and assertions).
    pub fn user(&self) -> Result<UserUrl, IdentityError> {
        self.sub
            .parse()
            .map_err(|_| IdentityError::InvalidToken("subject is not a user URL"))
    }

    /// The profile carried by the token.
    pub fn profile(&self) -> Profile {
        Profile {
            cn: self.name.clone(),
            avatar: self.picture.clone(),
            email: self.email.clone(),
            locale: self.locale.clone(),
        }
    }

    /// The reTHINK `userProfile` of the subject.
    pub fn user_profile(&self) -> UserProfile {
        let p = self.profile();
        UserProfile {
            user_url: self.sub.clone(),
            username: self.preferred_username.clone().unwrap_or_default(),
            cn: p.cn,
            avatar: p.avatar,
            email: p.email,
            locale: p.locale,
        }
    }

    pub(crate) fn set_profile(&mut self, username: &str, p: &Profile) {
        self.preferred_username = Some(username.to_owned());
        self.name = p.cn.clone();
        self.picture = p.avatar.clone();
        self.email = p.email.clone();
        self.locale = p.locale.clone();
    }
}

/// What a user tells about themself at registration (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// Common name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    /// Avatar URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// E-mail address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Locale, e.g. `en-GB`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

impl Profile {
    /// Checks lengths and characters.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let check = |field: &str, v: &Option<String>, max: usize| match v {
            Some(s) if s.chars().count() > max || s.chars().any(char::is_control) => Err(
                IdentityError::invalid(field, "a short text without control characters"),
            ),
            _ => Ok(()),
        };
        check("profile.cn", &self.cn, MAX_PROFILE_FIELD_LEN)?;
        check("profile.avatar", &self.avatar, MAX_AVATAR_LEN)?;
        check("profile.email", &self.email, MAX_PROFILE_FIELD_LEN)?;
        check("profile.locale", &self.locale, MAX_PROFILE_FIELD_LEN)
    }
}

/// The reTHINK `userProfile` object (rethink-wire.md §1 `body.identity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserProfile {
    /// `userURL`: `user://<idp>/<username>`.
    #[serde(rename = "userURL")]
    pub user_url: String,
    /// `username`.
    pub username: String,
    /// `cn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    /// `avatar`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `locale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// A token just issued, with its claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: Secret,
    /// What it says.
    pub claims: Claims,
}

/// A device (runtime) registration: the credential a runtime keeps to obtain
/// device tokens. The secret is shown once; the provider keeps only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredentials {
    /// The device id.
    pub device: String,
    /// The device secret.
    pub secret: Secret,
    /// The runtime URL this device is, `hyperty-runtime://<D>/<device>` (use the
    /// device id as the runtime id).
    pub runtime: String,
}

/// A registered user, as reported back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    /// `user://<D>/<username>`.
    #[serde(rename = "userURL")]
    pub user: UserUrl,
    /// The (normalised) username.
    pub username: String,
    /// The profile.
    pub profile: Profile,
}

/// An identity assertion issued for a hyperty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityAssertion {
    /// The compact JWT (not a secret: it travels in every message of the hyperty).
    pub assertion: String,
    /// The provider's domain.
    pub idp: String,
    /// Who the assertion is about.
    pub user_profile: UserProfile,
    /// The hyperty it binds.
    pub hyperty: String,
    /// Expiry, seconds since the epoch.
    pub expires: u64,
}

impl IdentityAssertion {
    /// The `body.identity` object (rethink-wire.md §7):
    /// `{userProfile:{userURL,username,…}, idp, assertion, expires}`.
    pub fn to_identity(&self) -> Value {
        json!({
            "userProfile": self.user_profile,
            "idp": self.idp,
            "assertion": self.assertion,
            "expires": self.expires,
        })
    }
}

/// An assertion that passed every check: signature by a key of its issuer,
/// issuer, audience, lifetime, and the subject belonging to the issuer's domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedIdentity {
    /// The user.
    #[serde(rename = "userURL")]
    pub user: UserUrl,
    /// The provider's domain (the user URL's domain).
    pub idp: String,
    /// The hyperty the user is bound to.
    pub hyperty: Option<HypertyUrl>,
    /// The profile, from the signed claims (never from the unsigned `userProfile`).
    pub user_profile: UserProfile,
    /// The audience it was checked against.
    pub audience: String,
    /// Expiry, seconds since the epoch.
    pub expires: u64,
}

impl VerifiedIdentity {
    /// Builds the verified identity from checked assertion claims of `idp`.
    pub(crate) fn from_claims(idp: &str, claims: &Claims) -> Result<Self, IdentityError> {
        let user = claims.user()?;
        if user.domain() != Some(idp) {
            return Err(IdentityError::IdentityMismatch(
                "the user does not belong to the issuing provider",
            ));
        }
        let hyperty =
            match &claims.hyperty {
                Some(h) => Some(h.parse::<HypertyUrl>().map_err(|_| {
                    IdentityError::InvalidToken("hyperty claim is not a hyperty URL")
                })?),
                None => None,
            };
        Ok(VerifiedIdentity {
            user,
            idp: idp.to_owned(),
            hyperty,
            user_profile: claims.user_profile(),
            audience: claims.aud.clone(),
            expires: claims.exp,
        })
    }
}

/// A short text field: non-empty, bounded, no control characters or whitespace
/// at the ends.
pub(crate) fn check_label(field: &str, v: &str, max: usize) -> Result<(), IdentityError> {
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) || v.trim() != v {
        return Err(IdentityError::invalid(
            field,
            "a non-empty short text without control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let t = IssuedToken {
            token: Secret::new("eyJ.x.y"),
            claims: claims(),
        };
        assert!(!format!("{t:?}").contains("eyJ"));
    }

    fn claims() -> Claims {
        Claims {
            iss: "domain-idp://a.org".into(),
            sub: "user://a.org/alice".into(),
            aud: "x".into(),
            exp: 2,
            iat: 1,
            nbf: 1,
            jti: "j".into(),
            token_use: TokenUse::Assertion,
            device: None,
            hyperty: Some("hyperty://b.org/h".into()),
            preferred_username: Some("alice".into()),
            name: Some("Alice".into()),
            picture: None,
            email: None,
            locale: None,
        }
    }

    #[test]
    fn verified_identity_from_claims() {
        let v = VerifiedIdentity::from_claims("a.org", &claims()).unwrap();
        assert_eq!(v.user.as_str(), "user://a.org/alice");
        assert_eq!(v.user_profile.cn.as_deref(), Some("Alice"));
        assert_eq!(v.hyperty.unwrap().as_str(), "hyperty://b.org/h");
        // a provider cannot speak for users of another domain
        assert_eq!(
            VerifiedIdentity::from_claims("b.org", &claims()),
            Err(IdentityError::IdentityMismatch(
                "the user does not belong to the issuing provider"
            ))
        );
    }

    #[test]
    fn profile_limits() {
        assert!(Profile::default().validate().is_ok());
        let p = Profile {
            cn: Some("x".repeat(MAX_PROFILE_FIELD_LEN + 1)),
            ..Profile::default()
        };
        assert!(p.validate().is_err());
        let p = Profile {
            email: Some("a\u{0}b".into()),
            ..Profile::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn identity_object_shape() {
        let a = IdentityAssertion {
            assertion: "a.b.c".into(),
            idp: "a.org".into(),
            user_profile: claims().user_profile(),
            hyperty: "hyperty://b.org/h".into(),
            expires: 9,
        };
        let v = a.to_identity();
        assert_eq!(v["userProfile"]["userURL"], "user://a.org/alice");
        assert_eq!(v["userProfile"]["username"], "alice");
        assert_eq!(v["idp"], "a.org");
        assert_eq!(v["assertion"], "a.b.c");
    }
}
