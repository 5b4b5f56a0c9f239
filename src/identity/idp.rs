//! The [`IdentityProvider`] actor and its typed messages.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, MessageResult, ResponseActFuture,
    WrapFuture,
};
use argon2::{PasswordHasher, PasswordVerifier};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyperty_actors::address::{HypertyUrl, UserUrl};
use hyperty_actors::message::Message;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use tracing::{debug, info, info_span, warn};

use crate::domain_registry::{Clock, SystemClock};

use super::config::{IdpConfig, MAX_PASSWORD_LEN};
use super::error::IdentityError;
use super::jwt;
use super::keys::{JwkSet, KeyRing};
use super::model::{
    check_label, unix_now, Claims, DeviceCredentials, IdentityAssertion, IssuedToken, Profile,
    Secret, TokenUse, UserInfo, MAX_LABEL_LEN, MAX_USERNAME_LEN,
};
use super::verifier::TokenVerifier;

/// How often retired keys whose tokens have all expired are dropped.
pub const KEY_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Salt used for the decoy hash computed when an unknown user logs in, so a
/// login takes as long whether or not the user exists.
const DECOY_SALT: &[u8] = b"hyperty-decoy-salt";

/// Registers a user of this provider's domain. Answers the user's URL.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<UserInfo, IdentityError>")]
pub struct RegisterUser {
    /// Letters, digits, `.`, `_`, `-`; 1–64 characters; stored in lower case.
    pub username: String,
    /// At least `min_password_len` characters, at most 1024 bytes.
    pub password: Secret,
    /// Optional profile.
    pub profile: Profile,
}

/// Checks a user's password and issues an ID token. With a device token the
/// user logs in on that device (the token carries its id as `device`); several
/// users may log in on one device.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<IssuedToken, IdentityError>")]
pub struct Login {
    /// The username.
    pub username: String,
    /// The password.
    pub password: Secret,
    /// A device token of this provider (from [`DeviceToken`]), proving the device.
    /// A bare device id is not accepted: anyone could name any device.
    pub device: Option<Secret>,
}

/// Registers a device (a runtime), distinct from any user. Answers its id and
/// secret; the secret is shown only this once.
#[derive(Debug, Clone, Default, actix::Message)]
#[rtype(result = "Result<DeviceCredentials, IdentityError>")]
pub struct RegisterDevice {
    /// A human-readable label, e.g. "living-room TV".
    pub label: Option<String>,
}

/// Exchanges a device's id and secret for a device token (`token_use: device`,
/// `sub` = the device's runtime URL), which authenticates the runtime itself.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<IssuedToken, IdentityError>")]
pub struct DeviceToken {
    /// The device id.
    pub device: String,
    /// The device secret.
    pub secret: Secret,
}

/// Issues an identity assertion binding the user of `id_token` to `hyperty`, for
/// `audience`. It expires after `assertion_lifetime_secs`, and never after the ID
/// token.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<IdentityAssertion, IdentityError>")]
pub struct IssueAssertion {
    /// The user's ID token.
    pub id_token: Secret,
    /// The hyperty the user acts through.
    pub hyperty: HypertyUrl,
    /// Who the assertion is for (see
    /// [`DEFAULT_ASSERTION_AUDIENCE`](super::DEFAULT_ASSERTION_AUDIENCE)).
    pub audience: String,
}

/// Makes a new signing key. The old one stays published until every token it
/// signed has expired. Answers the new `kid`.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "Result<String, IdentityError>")]
pub struct RotateKeys;

/// The published JWK set.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "JwkSet")]
pub struct Jwks;

/// The JWK set and how long HTTP caches may keep it (for the HTTP route).
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "(JwkSet, u64)")]
pub(crate) struct PublishedJwks;

/// A reTHINK message to `domain-idp://<D>` (see the module docs), already parsed
/// by the node. Answered with the response message.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Message")]
pub struct IdpRequest(pub Message);

#[derive(Debug)]
struct UserRecord {
    /// PHC string of the Argon2id hash.
    hash: Arc<str>,
    profile: Profile,
}

#[derive(Debug)]
struct DeviceRecord {
    /// SHA-256 of the secret (a 256-bit random value needs no slow hash).
    secret_hash: [u8; 32],
}

/// The identity provider of one domain (see the module docs).
///
/// Users and devices are kept in memory: they are lost at restart, while the
/// signing keys persist in `data_dir` (so tokens issued before a restart keep
/// verifying, but their users must register again to obtain new ones).
pub struct IdentityProvider {
    domain: String,
    config: IdpConfig,
    issuer: String,
    audience: String,
    clock: Arc<dyn Clock>,
    keys: KeyRing,
    verifier: TokenVerifier,
    argon: argon2::Argon2<'static>,
    users: HashMap<String, UserRecord>,
    /// Usernames whose registration hash is being computed.
    pending: HashSet<String>,
    devices: HashMap<String, DeviceRecord>,
    /// Password hashes in flight.
    hashing: usize,
}

impl std::fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("domain", &self.domain)
            .field("issuer", &self.issuer)
            .field("users", &self.users.len())
            .field("devices", &self.devices.len())
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl IdentityProvider {
    /// A provider for `domain` on the system clock. Loads (or creates) its keys in
    /// `config.data_dir`.
    pub fn new(domain: &str, config: IdpConfig) -> Result<IdentityProvider, IdentityError> {
        IdentityProvider::with_clock(domain, config, Arc::new(SystemClock))
    }

    /// A provider reading time from `clock` (tests use a
    /// [`ManualClock`](super::ManualClock)).
    pub fn with_clock(
        domain: &str,
        config: IdpConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<IdentityProvider, IdentityError> {
        config.validate()?;
        if !super::config::valid_domain(domain) {
            return Err(IdentityError::InvalidConfig(format!(
                "{domain:?} is not a domain"
            )));
        }
        let now = unix_now(clock.as_ref());
        let keys = KeyRing::open(config.data_dir.as_deref(), now)?;
        let issuer = config.issuer_for(domain);
        let audience = config.audience_for(domain);
        let verifier = TokenVerifier::new(
            domain,
            issuer.clone(),
            audience.clone(),
            config.clock_skew_secs,
            clock.clone(),
            keys.public_keys()?,
        );
        Ok(IdentityProvider {
            domain: domain.to_owned(),
            argon: config.kdf.argon2()?,
            config,
            issuer,
            audience,
            clock,
            keys,
            verifier,
            users: HashMap::new(),
            pending: HashSet::new(),
            devices: HashMap::new(),
            hashing: 0,
        })
    }

    /// The synchronous token verifier sharing this provider's keys.
    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    /// The provider's domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The configuration.
    pub fn config(&self) -> &IdpConfig {
        &self.config
    }

    pub(crate) fn now(&self) -> u64 {
        unix_now(self.clock.as_ref())
    }

    fn begin_hash(&mut self) -> Result<(), IdentityError> {
        if self.hashing >= self.config.max_concurrent_hashes {
            return Err(IdentityError::Busy);
        }
        self.hashing += 1;
        Ok(())
    }

    fn end_hash(&mut self) {
        self.hashing = self.hashing.saturating_sub(1);
    }

    fn sign(&self, claims: &Claims) -> Result<String, IdentityError> {
        jwt::sign(self.keys.current()?, claims)
    }

    fn claims(&self, sub: String, aud: String, lifetime: u64, token_use: TokenUse) -> Claims {
        let now = self.now();
        Claims {
            iss: self.issuer.clone(),
            sub,
            aud,
            exp: now.saturating_add(lifetime),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            token_use,
            device: None,
            hyperty: None,
            preferred_username: None,
            name: None,
            picture: None,
            email: None,
            locale: None,
        }
    }

    fn user_url(&self, username: &str) -> Result<UserUrl, IdentityError> {
        format!("user://{}/{username}", self.domain)
            .parse()
            .map_err(|_| IdentityError::invalid("username", "a valid user name"))
    }

    fn issue_id_token(
        &self,
        username: &str,
        device: Option<String>,
    ) -> Result<IssuedToken, IdentityError> {
        let user = self
            .users
            .get(username)
            .ok_or(IdentityError::BadCredentials)?;
        let mut claims = self.claims(
            self.user_url(username)?.to_string(),
            self.audience.clone(),
            self.config.id_token_lifetime_secs,
            TokenUse::Id,
        );
        claims.device = device;
        claims.set_profile(username, &user.profile);
        let token = self.sign(&claims)?;
        info!(user = %claims.sub, device = ?claims.device, "user logged in");
        Ok(IssuedToken {
            token: Secret::new(token),
            claims,
        })
    }

    /// The device id of a device token presented at login, if the device exists.
    fn device_of(&self, token: Option<&Secret>) -> Result<Option<String>, IdentityError> {
        let Some(token) = token else {
            return Ok(None);
        };
        let claims = self.verifier.verify_device_token(token.expose())?;
        match claims.device {
            Some(d) if self.devices.contains_key(&d) => Ok(Some(d)),
            _ => Err(IdentityError::BadCredentials),
        }
    }

    pub(crate) fn register_user(
        &mut self,
        m: RegisterUser,
    ) -> ResponseActFuture<Self, Result<UserInfo, IdentityError>> {
        let checked = (|| {
            let username = normalise_username(&m.username).ok_or(IdentityError::invalid(
                "username",
                "1-64 letters, digits, '.', '_' or '-'",
            ))?;
            let pw = m.password.expose();
            if pw.chars().count() < self.config.min_password_len || pw.len() > MAX_PASSWORD_LEN {
                return Err(IdentityError::invalid(
                    "password",
                    "between min_password_len characters and 1024 bytes",
                ));
            }
            m.profile.validate()?;
            if self.users.contains_key(&username) || self.pending.contains(&username) {
                return Err(IdentityError::UserExists(username));
            }
            if self.users.len() + self.pending.len() >= self.config.max_users {
                return Err(IdentityError::Full {
                    table: "the user table",
                    limit: self.config.max_users,
                });
            }
            let user = self.user_url(&username)?;
            self.begin_hash()?;
            Ok((username, user))
        })();
        let (username, user) = match checked {
            Ok(v) => v,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        self.pending.insert(username.clone());
        let argon = self.argon.clone();
        let password = m.password;
        let profile = m.profile;
        let hashed = actix_rt::task::spawn_blocking(move || {
            let mut salt = [0u8; 16];
            rand_core::OsRng.fill_bytes(&mut salt);
            argon
                .hash_password_with_salt(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
        });
        Box::pin(hashed.into_actor(self).map(move |res, act, _| {
            act.end_hash();
            act.pending.remove(&username);
            let phc = match res {
                Ok(Ok(phc)) => phc,
                _ => return Err(IdentityError::Internal("password hashing failed")),
            };
            act.users.insert(
                username.clone(),
                UserRecord {
                    hash: Arc::from(phc),
                    profile: profile.clone(),
                },
            );
            info!(user = %user, "user registered");
            Ok(UserInfo {
                user,
                username,
                profile,
            })
        }))
    }

    pub(crate) fn login(
        &mut self,
        m: Login,
    ) -> ResponseActFuture<Self, Result<IssuedToken, IdentityError>> {
        let checked = (|| {
            let username = normalise_username(&m.username).ok_or(IdentityError::BadCredentials)?;
            if m.password.expose().len() > MAX_PASSWORD_LEN {
                return Err(IdentityError::BadCredentials);
            }
            let device = self.device_of(m.device.as_ref())?;
            self.begin_hash()?;
            Ok((username, device))
        })();
        let (username, device) = match checked {
            Ok(v) => v,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let stored = self.users.get(&username).map(|u| u.hash.clone());
        let argon = self.argon.clone();
        let password = m.password;
        let verified = actix_rt::task::spawn_blocking(move || match stored {
            Some(hash) => argon
                .verify_password(password.expose().as_bytes(), &*hash)
                .is_ok(),
            None => {
                // same work as a real check, then refuse
                let _ = argon.hash_password_with_salt(password.expose().as_bytes(), DECOY_SALT);
                false
            }
        });
        Box::pin(verified.into_actor(self).map(move |res, act, _| {
            act.end_hash();
            if !matches!(res, Ok(true)) {
                debug!(username = %username, "login refused");
                return Err(IdentityError::BadCredentials);
            }
            act.issue_id_token(&username, device)
        }))
    }

    pub(crate) fn register_device(
        &mut self,
        m: RegisterDevice,
    ) -> Result<DeviceCredentials, IdentityError> {
        if let Some(label) = &m.label {
            check_label("label", label, MAX_LABEL_LEN)?;
        }
        if self.devices.len() >= self.config.max_devices {
            return Err(IdentityError::Full {
                table: "the device table",
                limit: self.config.max_devices,
            });
        }
        let device = uuid::Uuid::new_v4().to_string();
        let mut raw = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut raw);
        let secret = URL_SAFE_NO_PAD.encode(raw);
        self.devices.insert(
            device.clone(),
            DeviceRecord {
                secret_hash: Sha256::digest(secret.as_bytes()).into(),
            },
        );
        info!(device = %device, label = ?m.label, "device registered");
        Ok(DeviceCredentials {
            runtime: format!("hyperty-runtime://{}/{device}", self.domain),
            device,
            secret: Secret::new(secret),
        })
    }

    pub(crate) fn device_token(&self, m: &DeviceToken) -> Result<IssuedToken, IdentityError> {
        let record = self
            .devices
            .get(&m.device)
            .ok_or(IdentityError::BadCredentials)?;
        let presented: [u8; 32] = Sha256::digest(m.secret.expose().as_bytes()).into();
        if !same_bytes(&presented, &record.secret_hash) {
            return Err(IdentityError::BadCredentials);
        }
        let mut claims = self.claims(
            format!("hyperty-runtime://{}/{}", self.domain, m.device),
            self.audience.clone(),
            self.config.device_token_lifetime_secs,
            TokenUse::Device,
        );
        claims.device = Some(m.device.clone());
        let token = self.sign(&claims)?;
        info!(device = %m.device, "device token issued");
        Ok(IssuedToken {
            token: Secret::new(token),
            claims,
        })
    }

    pub(crate) fn issue_assertion(
        &self,
        m: &IssueAssertion,
    ) -> Result<IdentityAssertion, IdentityError> {
        check_label("audience", &m.audience, MAX_LABEL_LEN)?;
        let id = self.verifier.verify_id_token(m.id_token.expose())?;
        let username = id
            .sub
            .strip_prefix(&format!("user://{}/", self.domain))
            .ok_or(IdentityError::BadCredentials)?;
        let record = self
            .users
            .get(username)
            .ok_or(IdentityError::BadCredentials)?;
        let mut claims = self.claims(
            id.sub.clone(),
            m.audience.clone(),
            self.config.assertion_lifetime_secs,
            TokenUse::Assertion,
        );
        claims.exp = claims.exp.min(id.exp);
        claims.device = id.device.clone();
        claims.hyperty = Some(m.hyperty.to_string());
        claims.set_profile(username, &record.profile);
        let assertion = self.sign(&claims)?;
        debug!(user = %claims.sub, hyperty = %m.hyperty, "identity assertion issued");
        Ok(IdentityAssertion {
            assertion,
            idp: self.domain.clone(),
            user_profile: claims.user_profile(),
            hyperty: m.hyperty.to_string(),
            expires: claims.exp,
        })
    }

    fn rotate(&mut self) -> Result<String, IdentityError> {
        let keep = self
            .config
            .longest_lifetime_secs()
            .saturating_add(self.config.clock_skew_secs);
        let kid = self.keys.rotate(self.now(), keep, self.config.max_keys)?;
        self.verifier.publish(self.keys.public_keys()?);
        info!(kid = %kid, "identity provider signing key rotated");
        Ok(kid)
    }

    /// Signs arbitrary claims with the current key (tests forge tokens with it).
    #[cfg(test)]
    pub(crate) fn sign_for_test(&self, claims: &Claims) -> String {
        self.sign(claims).expect("signing works")
    }

    /// Claims as this provider would issue them.
    #[cfg(test)]
    pub(crate) fn claims_for_test(&self, sub: &str, token_use: TokenUse) -> Claims {
        self.claims(sub.to_owned(), self.audience.clone(), 60, token_use)
    }

    fn prune_keys(&mut self) {
        if self.keys.prune(self.now()) {
            self.keys.save_quietly();
            match self.keys.public_keys() {
                Ok(k) => self.verifier.publish(k),
                Err(e) => warn!(error = %e, "could not publish the pruned key set"),
            }
        }
    }
}

/// Lower-cases and checks a username: 1–64 of `[a-z0-9._-]`, starting with a
/// letter or digit.
pub(crate) fn normalise_username(name: &str) -> Option<String> {
    let n = name.to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= MAX_USERNAME_LEN
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    ok.then_some(n)
}

/// Compares two digests without stopping at the first difference.
fn same_bytes(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Actor for IdentityProvider {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(domain = %self.domain, issuer = %self.issuer, "identity provider started");
        ctx.run_interval(KEY_PRUNE_INTERVAL, |act, _| act.prune_keys());
    }
}

impl Handler<RegisterUser> for IdentityProvider {
    type Result = ResponseActFuture<Self, Result<UserInfo, IdentityError>>;

    fn handle(&mut self, m: RegisterUser, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.register_user", domain = %self.domain).entered();
        self.register_user(m)
    }
}

impl Handler<Login> for IdentityProvider {
    type Result = ResponseActFuture<Self, Result<IssuedToken, IdentityError>>;

    fn handle(&mut self, m: Login, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.login", domain = %self.domain).entered();
        self.login(m)
    }
}

impl Handler<RegisterDevice> for IdentityProvider {
    type Result = Result<DeviceCredentials, IdentityError>;

    fn handle(&mut self, m: RegisterDevice, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.register_device", domain = %self.domain).entered();
        self.register_device(m)
    }
}

impl Handler<DeviceToken> for IdentityProvider {
    type Result = Result<IssuedToken, IdentityError>;

    fn handle(&mut self, m: DeviceToken, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.device_token", domain = %self.domain).entered();
        self.device_token(&m)
    }
}

impl Handler<IssueAssertion> for IdentityProvider {
    type Result = Result<IdentityAssertion, IdentityError>;

    fn handle(&mut self, m: IssueAssertion, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.issue_assertion", domain = %self.domain).entered();
        self.issue_assertion(&m)
    }
}

impl Handler<RotateKeys> for IdentityProvider {
    type Result = Result<String, IdentityError>;

    fn handle(&mut self, _: RotateKeys, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.rotate_keys", domain = %self.domain).entered();
        self.rotate()
    }
}

impl Handler<Jwks> for IdentityProvider {
    type Result = MessageResult<Jwks>;

    fn handle(&mut self, _: Jwks, _: &mut Context<Self>) -> Self::Result {
        self.prune_keys();
        MessageResult(self.verifier.jwks())
    }
}

impl Handler<PublishedJwks> for IdentityProvider {
    type Result = MessageResult<PublishedJwks>;

    fn handle(&mut self, _: PublishedJwks, _: &mut Context<Self>) -> Self::Result {
        self.prune_keys();
        MessageResult((self.verifier.jwks(), self.config.jwks_max_age_secs))
    }
}

impl Handler<IdpRequest> for IdentityProvider {
    type Result = ResponseActFuture<Self, Message>;

    fn handle(&mut self, IdpRequest(req): IdpRequest, _: &mut Context<Self>) -> Self::Result {
        let _span =
            info_span!("idp.request", id = req.id, kind = %req.kind, from = %req.from).entered();
        super::wire::handle(self, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(normalise_username("Alice"), Some("alice".into()));
        assert_eq!(
            normalise_username("bob.smith_2-x"),
            Some("bob.smith_2-x".into())
        );
        for bad in ["", ".alice", "-x", "a b", "a/b", "ä", &"a".repeat(65)] {
            assert_eq!(normalise_username(bad), None, "{bad}");
        }
    }

    #[test]
    fn concurrent_hashes_are_bounded() {
        let cfg = IdpConfig {
            max_concurrent_hashes: 1,
            ..IdpConfig::default()
        };
        let mut idp = IdentityProvider::new("a.org", cfg).unwrap();
        assert!(idp.begin_hash().is_ok());
        assert_eq!(idp.begin_hash(), Err(IdentityError::Busy));
        idp.end_hash();
        assert!(idp.begin_hash().is_ok());
    }

    #[test]
    fn digest_comparison() {
        let a = [1u8; 32];
        let mut b = a;
        assert!(same_bytes(&a, &b));
        b[31] = 0;
        assert!(!same_bytes(&a, &b));
    }
}
