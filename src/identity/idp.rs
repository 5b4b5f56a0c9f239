//! The [`IdentityProvider`] actor and its typed messages.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, MessageResult,
    ResponseActFuture, WrapFuture,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyperty_actors::address::{HypertyUrl, UserUrl};
use hyperty_actors::message::Message;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use tracing::{debug, info, info_span, warn};

use hyperty_actors::clock::{Clock, SystemClock};

use super::config::{IdpConfig, MAX_PASSWORD_LEN};
use super::error::IdentityError;
use super::hasher::HashPool;
use super::jwt;
use super::keys::{JwkSet, KeyRing};
use super::model::{
    check_label, Claims, DeviceCredentials, IdentityAssertion, IssuedToken, Profile, Secret,
    TokenUse, UserInfo, MAX_LABEL_LEN, MAX_USERNAME_LEN,
};
use super::shared::{
    Claim, DeviceClaim, Fetched, SharedIdentities, SharedKeys, KEYS_RETRY, SHARED_POLL,
};
use super::store::{Change, IdentityStore, StoredDevice, StoredUser};
use super::throttle::{Attempt, LoginThrottle};
use super::verifier::{short, TokenVerifier};
use crate::cluster::ClusterStore;

/// What an operation of the provider answers, once the domain's state is read
/// and its writes are in (see [`IdentityProvider::shared_op`]).
pub(crate) type Op<T> = ResponseActFuture<IdentityProvider, Result<T, IdentityError>>;

/// How often retired keys whose tokens have all expired are dropped.
pub const KEY_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

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
    /// Where the login comes from (the client's IP address), for the per-source
    /// login throttle; `None` for callers inside the process.
    pub source: Option<IpAddr>,
}

/// Registers a device (a runtime) for the user of `id_token`, who becomes its
/// owner. Answers its id and secret; the secret is shown only this once.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<DeviceCredentials, IdentityError>")]
pub struct RegisterDevice {
    /// A human-readable label, e.g. "living-room TV".
    pub label: Option<String>,
    /// The owner's ID token.
    pub id_token: Secret,
}

/// Deletes a user, their devices and every token of them (see
/// [`TokenVerifier`]'s revocation). `id_token` must be that user's own ID token or
/// one of an [admin](IdpConfig::admins).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Deletion, IdentityError>")]
pub struct DeleteUser {
    /// The user to delete.
    pub username: String,
    /// The ID token allowing it.
    pub id_token: Secret,
}

/// Deletes a device and every token of it. `id_token` must be its owner's ID
/// token or one of an [admin](IdpConfig::admins).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Deletion, IdentityError>")]
pub struct DeleteDevice {
    /// The device id.
    pub device: String,
    /// The ID token allowing it.
    pub id_token: Secret,
}

/// What a deletion removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The revoked subject: `user://<D>/<name>` or `hyperty-runtime://<D>/<device>`.
    pub subject: String,
    /// The runtime URLs of the devices deleted with a user (empty for a device).
    pub devices: Vec<String>,
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

/// Issues a short-lived peer token: this node proving its domain D to the node of
/// `peer` (`sub` = `domain://msg-node.<D>`, `aud` = `domain://msg-node.<peer>`,
/// `token_use: peer`), checked there against D's published keys.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<String, IdentityError>")]
pub struct IssuePeerToken {
    /// The peer domain the token is for.
    pub peer: String,
    /// Lifetime, seconds.
    pub lifetime_secs: u64,
}

/// Signs a catalogue descriptor with the provider's current key: answers a
/// compact JWS whose payload is [`DescriptorClaims`](super::DescriptorClaims)
/// (`iss` = this provider), checked with
/// [`verify_descriptor`](super::verify_descriptor) against the published JWK set.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<String, IdentityError>")]
pub struct SignDescriptor(pub hyperty_actors::catalogue::CatalogueDescriptor);

/// Makes a new signing key. The old one stays published until every token it
/// signed has expired. Answers the new `kid`.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "Result<String, IdentityError>")]
pub struct RotateKeys;

/// Stops the provider, closing its store (its data directory may then be opened
/// again). The node sends it when it stops.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Shutdown;

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
pub struct IdpRequest {
    /// The request.
    pub message: Message,
    /// The IP address of the session it came from, for the login throttle.
    pub source: Option<IpAddr>,
}

impl IdpRequest {
    /// A request from inside the process (no source address).
    pub fn new(message: Message) -> IdpRequest {
        IdpRequest {
            message,
            source: None,
        }
    }
}

#[derive(Debug)]
struct UserRecord {
    /// PHC string of the Argon2id hash.
    hash: Arc<str>,
    profile: Profile,
    /// Ids of the devices the user registered.
    devices: BTreeSet<String>,
}

#[derive(Debug)]
struct DeviceRecord {
    /// SHA-256 of the secret (a 256-bit random value needs no slow hash).
    secret_hash: [u8; 32],
    /// Username of the owner.
    owner: String,
    label: Option<String>,
}

impl DeviceRecord {
    fn stored(&self) -> StoredDevice {
        StoredDevice {
            secret_sha256: hex(&self.secret_hash),
            owner: self.owner.clone(),
            label: self.label.clone(),
        }
    }
}

/// The identity provider of one domain (see the module docs).
///
/// Users, devices and revocations live in an [`IdentityStore`] under `data_dir`
/// (read at start, written through on every change) and the signing keys in a
/// key file beside it, so a restarted provider knows everyone it knew.
pub struct IdentityProvider {
    domain: String,
    config: IdpConfig,
    issuer: String,
    audience: String,
    clock: Arc<dyn Clock>,
    keys: KeyRing,
    verifier: TokenVerifier,
    hasher: HashPool,
    throttle: LoginThrottle,
    store: IdentityStore,
    users: HashMap<String, UserRecord>,
    /// Usernames whose registration hash is being computed.
    pending: HashSet<String>,
    devices: HashMap<String, DeviceRecord>,
    /// Set when the domain's nodes share their signing keys through Redis.
    shared_keys: Option<SharedKeys>,
    /// Set when the domain's nodes share users, devices and revocations.
    shared: Option<SharedIdentities>,
    /// Writes of the operation in progress still to reach the cluster store.
    unshared: Option<redis::Pipeline>,
    /// Whether `keys` is the domain's shared set (always, without a cluster).
    keys_agreed: bool,
    /// The domain's revocation counter when this node last read the
    /// revocations, and whether a read is under way.
    revocations_seen: Option<u64>,
    polling_revocations: bool,
    /// The version of the domain's key set this node holds, and whether a
    /// read of it is under way.
    keys_version: Option<u64>,
    polling_keys: bool,
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

    /// A provider reading time from `clock`: on a node, the node's one clock
    /// (tests use a [`ManualClock`](super::ManualClock)).
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
        let now = clock.now_secs();
        let keys = KeyRing::open(config.data_dir.as_deref(), now)?;
        let (store, loaded) = IdentityStore::open(config.data_dir.as_deref())?;
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
        for (subject, at) in &loaded.revoked {
            verifier.revoke(subject, *at);
        }
        let mut users: HashMap<String, UserRecord> = loaded
            .users
            .into_iter()
            .map(|(name, u)| {
                let record = UserRecord {
                    hash: Arc::from(u.hash),
                    profile: u.profile,
                    devices: BTreeSet::new(),
                };
                (name, record)
            })
            .collect();
        let mut devices = HashMap::new();
        for (id, d) in loaded.devices {
            let (Some(secret_hash), Some(owner)) =
                (unhex(&d.secret_sha256), users.get_mut(&d.owner))
            else {
                warn!(device = %id, "stored device without a usable secret or owner ignored");
                continue;
            };
            owner.devices.insert(id.clone());
            devices.insert(
                id,
                DeviceRecord {
                    secret_hash,
                    owner: d.owner,
                    label: d.label,
                },
            );
        }
        Ok(IdentityProvider {
            domain: domain.to_owned(),
            hasher: HashPool::start(&config.kdf, config.max_concurrent_hashes, config.hash_queue)?,
            throttle: LoginThrottle::new(config.login_throttle.clone()),
            config,
            issuer,
            audience,
            clock,
            keys,
            verifier,
            store,
            users,
            pending: HashSet::new(),
            devices,
            shared_keys: None,
            shared: None,
            unshared: None,
            keys_agreed: true,
            revocations_seen: None,
            polling_revocations: false,
            keys_version: None,
            polling_keys: false,
        })
    }

    /// Shares the signing keys with every node of the domain on the same cluster
    /// store (see [`shared`](super::shared)); `None` keeps this node's own.
    pub fn with_cluster(mut self, store: Option<ClusterStore>) -> IdentityProvider {
        self.keys_agreed = store.is_none();
        self.shared = store
            .clone()
            .map(|s| SharedIdentities::new(s, &self.domain));
        self.shared_keys = store.map(SharedKeys::new);
        self
    }

    /// Runs `op` on the domain's current state: with a cluster, first reads the
    /// `users` and `devices` it needs from the cluster store into this node's
    /// view, and answers only once `op`'s writes are in the store (503 when it
    /// is unreachable). Without a cluster, just `op`.
    fn shared_op<T: 'static>(
        &mut self,
        users: Vec<String>,
        devices: Vec<String>,
        op: impl FnOnce(&mut Self) -> ResponseActFuture<Self, Result<T, IdentityError>> + 'static,
    ) -> ResponseActFuture<Self, Result<T, IdentityError>> {
        let Some(shared) = self.shared.clone() else {
            return op(self);
        };
        let fetch = shared.clone().fetch(users, devices);
        Box::pin(fetch.into_actor(self).then(move |fetched, act, _| {
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) => {
                    return Box::pin(actix::fut::ready(Err(e.into()))) as ResponseActFuture<_, _>
                }
            };
            act.absorb(fetched);
            act.unshared = None;
            Box::pin(op(act).then(move |res, act, _| {
                let writes = act.unshared.take();
                async move {
                    if let (Ok(_), Some(pipe)) = (&res, writes) {
                        shared.write(pipe).await?;
                    }
                    res
                }
                .into_actor(act)
            }))
        }))
    }

    /// [`Login`] on the domain's current state (the HTTP, typed and wire faces
    /// all come through here and the other operations below).
    pub(crate) fn login(&mut self, m: Login) -> Op<IssuedToken> {
        let users = normalise_username(&m.username).into_iter().collect();
        let devices = m
            .device
            .as_ref()
            .and_then(|t| self.verifier.verify_device_token(t.expose()).ok())
            .and_then(|c| c.device)
            .into_iter()
            .collect();
        self.shared_op(users, devices, |act| act.check_login(m))
    }

    /// [`RegisterDevice`] on the domain's current state.
    pub(crate) fn register_device(&mut self, m: RegisterDevice) -> Op<DeviceCredentials> {
        let users = self.token_user(&m.id_token);
        self.shared_op(users, Vec::new(), move |act| act.add_device(m))
    }

    /// [`DeleteUser`] on the domain's current state.
    pub(crate) fn delete_user(&mut self, m: DeleteUser) -> Op<Deletion> {
        let mut users = self.token_user(&m.id_token);
        users.extend(normalise_username(&m.username));
        self.shared_op(users, Vec::new(), move |act| {
            Box::pin(actix::fut::ready(act.remove_user(&m)))
        })
    }

    /// [`DeleteDevice`] on the domain's current state.
    pub(crate) fn delete_device(&mut self, m: DeleteDevice) -> Op<Deletion> {
        let users = self.token_user(&m.id_token);
        let devices = vec![m.device.clone()];
        self.shared_op(users, devices, move |act| {
            Box::pin(actix::fut::ready(act.remove_device(&m)))
        })
    }

    /// [`DeviceToken`] on the domain's current state.
    pub(crate) fn device_token(&mut self, m: DeviceToken) -> Op<IssuedToken> {
        let devices = vec![m.device.clone()];
        self.shared_op(Vec::new(), devices, move |act| {
            Box::pin(actix::fut::ready(act.issue_device_token(&m)))
        })
    }

    /// [`IssueAssertion`] on the domain's current state.
    pub(crate) fn issue_assertion(&mut self, m: IssueAssertion) -> Op<IdentityAssertion> {
        let users = self.token_user(&m.id_token);
        self.shared_op(users, Vec::new(), move |act| {
            Box::pin(actix::fut::ready(act.sign_assertion(&m)))
        })
    }

    /// Takes what the cluster store holds into this node's view.
    fn absorb(&mut self, fetched: Fetched) {
        for (name, user) in fetched.users {
            if let Some(at) = user.revoked {
                let subject = format!("user://{}/{name}", self.domain);
                self.verifier.revoke(&subject, at);
            }
            match user.record {
                Some(u) => {
                    self.users.insert(
                        name,
                        UserRecord {
                            hash: Arc::from(u.hash),
                            profile: u.profile,
                            devices: user.devices.into_iter().collect(),
                        },
                    );
                }
                None => {
                    self.users.remove(&name);
                }
            }
        }
        for (id, device, revoked) in fetched.devices {
            if let Some(at) = revoked {
                self.verifier.revoke(&self.runtime_url(&id), at);
            }
            let record = device.and_then(|d| {
                Some(DeviceRecord {
                    secret_hash: unhex(&d.secret_sha256)?,
                    owner: d.owner,
                    label: d.label,
                })
            });
            if let Some(old) = self.devices.remove(&id) {
                if let Some(u) = self.users.get_mut(&old.owner) {
                    u.devices.remove(&id);
                }
            }
            if let Some(r) = record {
                if let Some(u) = self.users.get_mut(&r.owner) {
                    u.devices.insert(id.clone());
                }
                self.devices.insert(id, r);
            }
        }
    }

    /// Queues the cluster side of `change`, written before the answer.
    fn share(&mut self, change: &Change<'_>) {
        if let Some(shared) = &self.shared {
            self.unshared = Some(shared.pipeline(change));
        }
    }

    /// The username of an ID token's subject, unchecked beyond the signature.
    fn token_user(&self, id_token: &Secret) -> Vec<String> {
        let prefix = format!("user://{}/", self.domain);
        self.verifier
            .verify_id_token(id_token.expose())
            .ok()
            .and_then(|c| c.sub.strip_prefix(&prefix).map(str::to_owned))
            .into_iter()
            .collect()
    }

    /// Takes the domain's revocations into this node's verifier when the
    /// domain's revocation counter moved (one `GET` otherwise), so a user or
    /// device deleted on another node is refused here within
    /// [`SHARED_POLL`] — and its live sessions here are closed.
    fn poll_revocations(&mut self, ctx: &mut Context<Self>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if self.polling_revocations {
            return;
        }
        self.polling_revocations = true;
        let seen = self.revocations_seen;
        ctx.spawn(
            shared
                .revocations(seen)
                .into_actor(self)
                .map(|read, act, _| {
                    act.polling_revocations = false;
                    match read {
                        Ok(Some((epoch, revoked))) => {
                            act.revocations_seen = Some(epoch);
                            act.take_revocations(revoked);
                        }
                        Ok(None) => {}
                        Err(e) => debug!(error = %e, "cannot read the domain's revocations now"),
                    }
                }),
        );
    }

    /// Revokes in this node's verifier what other nodes revoked, except what
    /// has expired anyway, within `max_revocations`.
    fn take_revocations(&mut self, revoked: HashMap<String, u64>) {
        let expired = self.now().saturating_sub(self.revocation_keep());
        let mut full = false;
        for (subject, at) in revoked {
            if at <= expired || self.verifier.is_revoked(&subject, at) {
                continue;
            }
            if self.verifier.revocations() >= self.config.max_revocations {
                full = true;
                continue;
            }
            self.verifier.revoke(&subject, at);
        }
        if full {
            warn!(
                limit = self.config.max_revocations,
                "the revocation table is full: some deletions on other nodes are not enforced by this node's verifier"
            );
        }
    }

    /// Offers this ring to the domain and takes the domain's set.
    fn agree_keys(&mut self, ctx: &mut Context<Self>) {
        let (Some(shared), false) = (self.shared_keys.clone(), self.keys_agreed) else {
            return;
        };
        let ours = match self.keys.encode() {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot encode the signing keys");
                return;
            }
        };
        ctx.wait(shared.agree(ours).into_actor(self).map(|agreed, act, _| {
            let adopted = agreed
                .map_err(IdentityError::from)
                .and_then(|(version, bytes)| act.adopt_keys(version, &bytes));
            match adopted {
                Ok(()) => {
                    act.keys_agreed = true;
                    info!(domain = %act.domain, "the domain's shared signing keys loaded");
                }
                Err(e) => warn!(error = %e, "cannot load the domain's shared signing keys yet"),
            }
        }));
    }

    /// Takes the domain's key set, at `version`, for signing and verifying.
    fn adopt_keys(&mut self, version: u64, bytes: &[u8]) -> Result<(), IdentityError> {
        self.keys.adopt(bytes)?;
        self.keys.prune(self.now());
        self.verifier.publish(self.keys.public_keys()?);
        self.keys_version = Some(version);
        Ok(())
    }

    /// Takes a key set another node rotated, once the domain's key version
    /// moved (one `GET` otherwise): its tokens then verify here, and this node
    /// signs with its new key, within [`SHARED_POLL`] of the rotation.
    fn poll_keys(&mut self, ctx: &mut Context<Self>) {
        let Some(shared) = self.shared_keys.clone() else {
            return;
        };
        if !self.keys_agreed || self.polling_keys {
            return;
        }
        self.polling_keys = true;
        let seen = self.keys_version;
        ctx.spawn(
            shared
                .changed(seen)
                .into_actor(self)
                .map(move |read, act, _| {
                    act.polling_keys = false;
                    let adopted = match read {
                        Ok(Some((version, bytes))) if act.keys_version == seen => {
                            act.adopt_keys(version, &bytes).map(|()| true)
                        }
                        Ok(_) => Ok(false),
                        Err(e) => Err(e.into()),
                    };
                    match adopted {
                        Ok(true) => {
                            info!(domain = %act.domain, "the domain's rotated signing keys loaded")
                        }
                        Ok(false) => {}
                        Err(e) => debug!(error = %e, "cannot read the domain's signing keys now"),
                    }
                }),
        );
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
        self.clock.now_secs()
    }

    /// The current key, once it is the domain's (see [`super::shared`]).
    fn signing_key(&self) -> Result<&super::keys::KeyEntry, IdentityError> {
        if !self.keys_agreed {
            return Err(IdentityError::Shared(
                "the domain's signing keys are not loaded yet".into(),
            ));
        }
        self.keys.current()
    }

    fn sign(&self, claims: &Claims) -> Result<String, IdentityError> {
        jwt::sign(self.signing_key()?, claims)
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

    /// The username of a valid ID token of an existing user of this provider.
    fn user_of(&self, id_token: &Secret) -> Result<String, IdentityError> {
        let claims = self.verifier.verify_id_token(id_token.expose())?;
        let name = claims
            .sub
            .strip_prefix(&format!("user://{}/", self.domain))
            .ok_or(IdentityError::BadCredentials)?;
        if !self.users.contains_key(name) {
            return Err(IdentityError::BadCredentials);
        }
        Ok(name.to_owned())
    }

    fn is_admin(&self, username: &str) -> bool {
        self.config.admins.iter().any(|a| a == username)
    }

    /// Makes room for `n` more revocations (forgetting those whose tokens have
    /// all expired first).
    fn room_for_revocations(&mut self, n: usize) -> Result<(), IdentityError> {
        if self.verifier.revocations() + n > self.config.max_revocations {
            self.forget_revocations();
        }
        if self.verifier.revocations() + n > self.config.max_revocations {
            return Err(IdentityError::Full {
                table: "the revocation table",
                limit: self.config.max_revocations,
            });
        }
        Ok(())
    }

    /// How long a revocation must be remembered: past it, every token it
    /// refuses has expired.
    fn revocation_keep(&self) -> u64 {
        self.config
            .longest_lifetime_secs()
            .saturating_add(self.config.clock_skew_secs)
            .saturating_add(1)
    }

    /// Drops revocations older than any token that could still be valid.
    fn forget_revocations(&mut self) {
        let gone = self
            .verifier
            .forget_revocations(self.now().saturating_sub(self.revocation_keep()));
        if gone.is_empty() {
            return;
        }
        let change = Change {
            unrevoke: gone.iter().map(String::as_str).collect(),
            ..Change::default()
        };
        if let Err(e) = self.store.apply(&change) {
            warn!(error = %e, "could not forget expired revocations in the store");
        }
    }

    fn runtime_url(&self, device: &str) -> String {
        format!("hyperty-runtime://{}/{device}", self.domain)
    }

    fn remove_user(&mut self, m: &DeleteUser) -> Result<Deletion, IdentityError> {
        let actor = self.user_of(&m.id_token)?;
        let target = normalise_username(&m.username)
            .ok_or(IdentityError::invalid("username", "a username"))?;
        if actor != target && !self.is_admin(&actor) {
            return Err(IdentityError::Forbidden(
                "only the user or an admin may delete a user",
            ));
        }
        let record = self
            .users
            .get(&target)
            .ok_or_else(|| IdentityError::NotFound(format!("user {target}")))?;
        let subject = self.user_url(&target)?.to_string();
        let devices: Vec<String> = record.devices.iter().cloned().collect();
        let runtimes: Vec<String> = devices.iter().map(|d| self.runtime_url(d)).collect();
        self.room_for_revocations(1 + devices.len())?;
        let now = self.now();
        let mut revoke = vec![(subject.as_str(), now)];
        revoke.extend(runtimes.iter().map(|r| (r.as_str(), now)));
        let change = Change {
            delete_users: vec![target.as_str()],
            delete_devices: devices.iter().map(String::as_str).collect(),
            revoke,
            ..Change::default()
        };
        self.store.apply(&change)?;
        self.share(&change);
        self.users.remove(&target);
        for d in &devices {
            self.devices.remove(d);
        }
        self.verifier.revoke(&subject, now);
        for r in &runtimes {
            self.verifier.revoke(r, now);
        }
        info!(user = %subject, by = %actor, devices = devices.len(), "user deleted, tokens revoked");
        Ok(Deletion {
            subject,
            devices: runtimes,
        })
    }

    fn remove_device(&mut self, m: &DeleteDevice) -> Result<Deletion, IdentityError> {
        let actor = self.user_of(&m.id_token)?;
        let record = self
            .devices
            .get(&m.device)
            .ok_or_else(|| IdentityError::NotFound(format!("device {}", short(&m.device))))?;
        if record.owner != actor && !self.is_admin(&actor) {
            return Err(IdentityError::Forbidden(
                "only the device's owner or an admin may delete a device",
            ));
        }
        let owner = record.owner.clone();
        self.room_for_revocations(1)?;
        let subject = self.runtime_url(&m.device);
        let now = self.now();
        let change = Change {
            delete_devices: vec![m.device.as_str()],
            owner: Some(owner.as_str()),
            revoke: vec![(subject.as_str(), now)],
            ..Change::default()
        };
        self.store.apply(&change)?;
        self.share(&change);
        self.devices.remove(&m.device);
        if let Some(u) = self.users.get_mut(&owner) {
            u.devices.remove(&m.device);
        }
        self.verifier.revoke(&subject, now);
        info!(device = %subject, by = %actor, "device deleted, tokens revoked");
        Ok(Deletion {
            subject,
            devices: Vec::new(),
        })
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
            // in a cluster this node's view is not the domain's: Redis decides
            // (atomically, with the limit) once the hash is made
            let here = self.shared.is_none();
            if self.pending.contains(&username) || (here && self.users.contains_key(&username)) {
                return Err(IdentityError::UserExists(username));
            }
            if here && self.users.len() + self.pending.len() >= self.config.max_users {
                return Err(self.users_full());
            }
            let user = self.user_url(&username)?;
            let hashed = self.hasher.hash(m.password.clone())?;
            Ok((username, user, hashed))
        })();
        let (username, user, hashed) = match checked {
            Ok(v) => v,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        self.pending.insert(username.clone());
        let profile = m.profile;
        let shared = self.shared.clone();
        let name = username.clone();
        let (max_users, full) = (self.config.max_users, self.users_full());
        let claimed = async move {
            let stored = StoredUser {
                hash: hashed.await?,
                profile,
            };
            if let Some(shared) = shared {
                let json = serde_json::to_vec(&stored)
                    .map_err(|e| IdentityError::Store(format!("cannot encode a user: {e}")))?;
                match shared.claim_user(name.clone(), json, max_users).await? {
                    Claim::Done => {}
                    Claim::Taken => return Err(IdentityError::UserExists(name)),
                    Claim::Full => return Err(full),
                }
            }
            Ok(stored)
        };
        Box::pin(claimed.into_actor(self).map(move |res, act, _| {
            act.pending.remove(&username);
            let stored = res?;
            act.store.apply(&Change {
                put_user: Some((&username, &stored)),
                ..Change::default()
            })?;
            act.users.insert(
                username.clone(),
                UserRecord {
                    hash: Arc::from(stored.hash),
                    profile: stored.profile.clone(),
                    devices: BTreeSet::new(),
                },
            );
            info!(user = %user, "user registered");
            Ok(UserInfo {
                user,
                username,
                profile: stored.profile,
            })
        }))
    }

    fn check_login(
        &mut self,
        m: Login,
    ) -> ResponseActFuture<Self, Result<IssuedToken, IdentityError>> {
        let source = m.source;
        let checked = (|| {
            let username = normalise_username(&m.username).ok_or(IdentityError::BadCredentials)?;
            if m.password.expose().len() > MAX_PASSWORD_LEN {
                return Err(IdentityError::BadCredentials);
            }
            let device = self.device_of(m.device.as_ref())?;
            let now = self.clock.now_ms();
            let ticket = self
                .throttle
                .begin(&username, source, now)
                .map_err(|wait_ms| {
                    debug!(username = %username, ?source, "login throttled");
                    IdentityError::Throttled {
                        retry_after_secs: wait_ms.div_ceil(1_000),
                    }
                })?;
            let stored = self.users.get(&username).map(|u| u.hash.clone());
            match self.hasher.verify(m.password.clone(), stored) {
                Ok(verified) => Ok((username, device, ticket, verified)),
                Err(e) => {
                    self.throttle
                        .finish(&username, source, ticket, Attempt::NotTried, now);
                    Err(e)
                }
            }
        })();
        let (username, device, ticket, verified) = match checked {
            Ok(v) => v,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        Box::pin(verified.into_actor(self).map(move |ok, act, _| {
            let now = act.clock.now_ms();
            let issued = if ok {
                act.issue_id_token(&username, device)
            } else {
                Err(IdentityError::BadCredentials)
            };
            let outcome = match &issued {
                Ok(_) => Attempt::Succeeded,
                Err(IdentityError::BadCredentials) => Attempt::Failed,
                Err(_) => Attempt::NotTried,
            };
            act.throttle.finish(&username, source, ticket, outcome, now);
            if issued.is_err() {
                debug!(username = %username, "login refused");
            }
            issued
        }))
    }

    fn users_full(&self) -> IdentityError {
        IdentityError::Full {
            table: "the user table",
            limit: self.config.max_users,
        }
    }

    fn devices_full(&self) -> IdentityError {
        IdentityError::Full {
            table: "the device table",
            limit: self.config.max_devices,
        }
    }

    fn owner_full(&self) -> IdentityError {
        IdentityError::Full {
            table: "the user's device list",
            limit: self.config.max_devices_per_user,
        }
    }

    /// Checks a device registration and makes the device: its owner, id,
    /// secret and record.
    fn new_device(
        &self,
        m: RegisterDevice,
    ) -> Result<(String, String, String, DeviceRecord), IdentityError> {
        let owner = self.user_of(&m.id_token)?;
        if let Some(label) = &m.label {
            check_label("label", label, MAX_LABEL_LEN)?;
        }
        // in a cluster the owner's devices were just read; the table is Redis's
        let owned = self.users.get(&owner).map_or(0, |u| u.devices.len());
        if owned >= self.config.max_devices_per_user {
            return Err(self.owner_full());
        }
        if self.shared.is_none() && self.devices.len() >= self.config.max_devices {
            return Err(self.devices_full());
        }
        let device = uuid::Uuid::new_v4().to_string();
        let mut raw = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut raw);
        let secret = URL_SAFE_NO_PAD.encode(raw);
        let record = DeviceRecord {
            secret_hash: Sha256::digest(secret.as_bytes()).into(),
            owner: owner.clone(),
            label: m.label,
        };
        Ok((owner, device, secret, record))
    }

    /// Registers a device: in a cluster, first in Redis, checked there against
    /// the domain's limits in the same atomic step.
    fn add_device(&mut self, m: RegisterDevice) -> Op<DeviceCredentials> {
        let (owner, device, secret, record) = match self.new_device(m) {
            Ok(v) => v,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let stored = record.stored();
        let claimed = match self.shared.clone() {
            None => None,
            Some(shared) => {
                let json = match serde_json::to_vec(&stored) {
                    Ok(j) => j,
                    Err(e) => {
                        let e = IdentityError::Store(format!("cannot encode a device: {e}"));
                        return Box::pin(actix::fut::ready(Err(e)));
                    }
                };
                let limits = (self.config.max_devices, self.config.max_devices_per_user);
                Some(shared.add_device(owner.clone(), device.clone(), json, limits))
            }
        };
        let claimed = async move {
            match claimed {
                Some(c) => c.await,
                None => Ok(DeviceClaim::Done),
            }
        };
        Box::pin(claimed.into_actor(self).map(move |claim, act, _| {
            match claim? {
                DeviceClaim::Done => {}
                DeviceClaim::NoOwner => return Err(IdentityError::BadCredentials),
                DeviceClaim::Full => return Err(act.devices_full()),
                DeviceClaim::OwnerFull => return Err(act.owner_full()),
            }
            act.store.apply(&Change {
                put_device: Some((&device, &stored)),
                ..Change::default()
            })?;
            info!(device = %device, owner = %owner, label = ?record.label, "device registered");
            act.devices.insert(device.clone(), record);
            if let Some(u) = act.users.get_mut(&owner) {
                u.devices.insert(device.clone());
            }
            Ok(DeviceCredentials {
                runtime: act.runtime_url(&device),
                device,
                secret: Secret::new(secret),
            })
        }))
    }

    fn issue_device_token(&self, m: &DeviceToken) -> Result<IssuedToken, IdentityError> {
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

    fn sign_assertion(&self, m: &IssueAssertion) -> Result<IdentityAssertion, IdentityError> {
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

    fn rotate(&mut self) -> Op<String> {
        let keep = self
            .config
            .longest_lifetime_secs()
            .saturating_add(self.config.clock_skew_secs);
        let (now, max_keys) = (self.now(), self.config.max_keys);
        let Some(shared) = self.shared_keys.clone() else {
            let rotated = (|| {
                let kid = self.keys.rotate(now, keep, max_keys)?;
                self.verifier.publish(self.keys.public_keys()?);
                info!(kid = %kid, "identity provider signing key rotated");
                Ok(kid)
            })();
            return Box::pin(actix::fut::ready(rotated));
        };
        if !self.keys_agreed {
            let e = IdentityError::Shared("the domain's signing keys are not loaded yet".into());
            return Box::pin(actix::fut::ready(Err(e)));
        }
        // rotate the domain's current set aside, and sign with the new key only
        // once it is the domain's: no node ever sees a token of an unknown key
        // for longer than its key poll
        let rotated = async move {
            let (version, bytes) = shared.clone().changed(None).await?.ok_or_else(|| {
                IdentityError::Shared("the domain's signing keys vanished".into())
            })?;
            let mut ring = KeyRing::from_shared(&bytes)?;
            let kid = ring.rotate(now, keep, max_keys)?;
            let ring = ring.encode()?;
            match shared.replace(version, ring.clone()).await? {
                Some(version) => Ok((kid, version, ring)),
                None => Err(IdentityError::Shared(
                    "another node changed the domain's signing keys at the same time: try again"
                        .into(),
                )),
            }
        };
        Box::pin(rotated.into_actor(self).map(|rotated, act, _| {
            let (kid, version, ring) = rotated?;
            act.adopt_keys(version, &ring)?;
            info!(kid = %kid, domain = %act.domain, "the domain's signing key rotated");
            Ok(kid)
        }))
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

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes of a 64-digit hex string.
fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Compares two digests without stopping at the first difference.
fn same_bytes(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Actor for IdentityProvider {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(domain = %self.domain, issuer = %self.issuer, "identity provider started");
        self.agree_keys(ctx);
        ctx.run_interval(KEYS_RETRY, |act, ctx| act.agree_keys(ctx));
        ctx.run_interval(KEY_PRUNE_INTERVAL, |act, ctx| {
            act.prune_keys();
            act.forget_revocations();
            if let Some(shared) = act.shared.clone() {
                let before = act.now().saturating_sub(act.revocation_keep());
                ctx.spawn(
                    async move {
                        if let Err(e) = shared.forget_revocations(before).await {
                            debug!(error = %e, "cannot forget the domain's expired revocations now");
                        }
                    }
                    .into_actor(act),
                );
            }
        });
        if self.shared.is_some() {
            self.poll_revocations(ctx);
            ctx.run_interval(SHARED_POLL, |act, ctx| {
                act.poll_revocations(ctx);
                act.poll_keys(ctx);
            });
        }
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
    type Result = ResponseActFuture<Self, Result<DeviceCredentials, IdentityError>>;

    fn handle(&mut self, m: RegisterDevice, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.register_device", domain = %self.domain).entered();
        self.register_device(m)
    }
}

impl Handler<Shutdown> for IdentityProvider {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        info!(domain = %self.domain, "identity provider stopping");
        ctx.stop();
    }
}

impl Handler<DeleteUser> for IdentityProvider {
    type Result = ResponseActFuture<Self, Result<Deletion, IdentityError>>;

    fn handle(&mut self, m: DeleteUser, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.delete_user", domain = %self.domain).entered();
        self.delete_user(m)
    }
}

impl Handler<DeleteDevice> for IdentityProvider {
    type Result = ResponseActFuture<Self, Result<Deletion, IdentityError>>;

    fn handle(&mut self, m: DeleteDevice, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.delete_device", domain = %self.domain).entered();
        self.delete_device(m)
    }
}

impl Handler<DeviceToken> for IdentityProvider {
    type Result = ResponseActFuture<Self, Result<IssuedToken, IdentityError>>;

    fn handle(&mut self, m: DeviceToken, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.device_token", domain = %self.domain).entered();
        self.device_token(m)
    }
}

impl Handler<IssueAssertion> for IdentityProvider {
    type Result = ResponseActFuture<Self, Result<IdentityAssertion, IdentityError>>;

    fn handle(&mut self, m: IssueAssertion, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.issue_assertion", domain = %self.domain).entered();
        self.issue_assertion(m)
    }
}

impl Handler<IssuePeerToken> for IdentityProvider {
    type Result = Result<String, IdentityError>;

    fn handle(&mut self, m: IssuePeerToken, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idp.peer_token", domain = %self.domain, peer = %m.peer).entered();
        if !super::config::valid_domain(&m.peer) {
            return Err(IdentityError::invalid("peer", "a domain"));
        }
        let claims = self.claims(
            format!("domain://msg-node.{}", self.domain),
            format!("domain://msg-node.{}", m.peer),
            m.lifetime_secs,
            TokenUse::Peer,
        );
        self.sign(&claims)
    }
}

impl Handler<SignDescriptor> for IdentityProvider {
    type Result = Result<String, IdentityError>;

    fn handle(&mut self, m: SignDescriptor, _: &mut Context<Self>) -> Self::Result {
        let _span =
            info_span!("idp.sign_descriptor", domain = %self.domain, name = %m.0.object_name)
                .entered();
        let claims = super::jwt::DescriptorClaims {
            iss: self.issuer.clone(),
            iat: self.now(),
            descriptor: m.0,
        };
        super::jwt::sign_descriptor(self.signing_key()?, &claims)
    }
}

impl Handler<RotateKeys> for IdentityProvider {
    type Result = ResponseActFuture<Self, Result<String, IdentityError>>;

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

    fn handle(&mut self, req: IdpRequest, _: &mut Context<Self>) -> Self::Result {
        let m = &req.message;
        let _span = info_span!("idp.request", id = m.id, kind = %m.kind, from = %m.from).entered();
        super::wire::handle(self, req.message, req.source)
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
    fn hex_round_trip() {
        let d: [u8; 32] = Sha256::digest(b"x").into();
        assert_eq!(unhex(&hex(&d)), Some(d));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"é".repeat(32)), None);
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
