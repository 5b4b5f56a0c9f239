//! The runtime's Identity Module actor, listening at `<runtimeURL>/idm`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, MessageResult, ResponseActFuture,
    ResponseFuture, StreamHandler, WrapFuture,
};
use actix_web::http::header;
use dashmap::DashMap;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use hyperty_actors::address::{Address, HypertyUrl, UserUrl};
use hyperty_actors::bus::{Bus, Deliver};
use hyperty_actors::error::error_response;
use hyperty_actors::message::{Message, ResponseCode};
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn};

use hyperty_actors::clock::{Clock, SystemClock};

use super::cache::{AssertionCheck, JwksCache, Miss, Prefetch};
use super::config::IdmConfig;
use super::error::IdentityError;
use super::interceptor::{Binding, Bindings, IdentityInterceptor};
use super::keys::Jwk;
use super::model::{IdentityAssertion, Secret, VerifiedIdentity};

/// Largest answer read from a provider's login or assertion endpoint, bytes.
pub const MAX_IDP_ANSWER: usize = 64 * 1024;
/// Background key fetches queued by [`AssertionCheck`]s before more are dropped.
pub const PREFETCH_QUEUE: usize = 64;
/// Bindings renewed per refresh tick, at most (the rest wait for the next tick).
pub const MAX_REFRESH_PER_TICK: usize = 32;

/// Logs a user in at their identity provider (`idp` is its domain) over HTTP and
/// keeps the ID token in this runtime. Several users can be logged in at once.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<UserSession, IdentityError>")]
pub struct LoginUser {
    /// The provider's domain, e.g. `a.org` (users are `user://a.org/<name>`).
    pub idp: String,
    /// The username.
    pub username: String,
    /// The password (sent to the provider only).
    pub password: Secret,
    /// This runtime's device token at that provider, if it registered as a device.
    pub device_token: Option<Secret>,
}

/// Forgets a user's login and unbinds the hyperties bound to them. Answers how
/// many bindings went.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "usize")]
pub struct LogoutUser {
    /// The user.
    pub user: UserUrl,
}

/// The users logged in at this runtime.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "Vec<UserSession>")]
pub struct ListSessions;

/// A user logged in at this runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSession {
    /// The user.
    #[serde(rename = "userURL")]
    pub user: UserUrl,
    /// The provider's domain.
    pub idp: String,
    /// When the ID token expires, seconds since the epoch.
    pub expires: u64,
}

/// Asks the user's identity provider for an assertion binding `user` to
/// `hyperty` (the user must be logged in, see [`LoginUser`]).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<IdentityAssertion, IdentityError>")]
pub struct GenerateAssertion {
    /// The user.
    pub user: UserUrl,
    /// The hyperty.
    pub hyperty: HypertyUrl,
    /// The audience; default [`IdmConfig::assertion_audience`].
    pub audience: Option<String>,
}

/// Validates an assertion of any trusted provider: fetches the issuer's JWKS
/// (`GET <base>/.well-known/jwks.json`) unless cached, then checks signature,
/// issuer, audience, lifetime and subject.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<VerifiedIdentity, IdentityError>")]
pub struct ValidateAssertion {
    /// The compact JWT.
    pub assertion: String,
    /// The provider the sender claims (`body.identity.idp`), checked if given.
    pub idp: Option<String>,
    /// The audience; default: any of [`IdmConfig::accepted_audiences`].
    pub audience: Option<String>,
}

/// Binds a user identity to a hyperty: from now on the hyperty's outgoing
/// messages carry `body.identity`. Without an `assertion` one is generated at the
/// user's provider; either way it is validated first, and must name this user
/// and this hyperty. Answers the bound assertion.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<IdentityAssertion, IdentityError>")]
pub struct BindIdentity {
    /// The hyperty.
    pub hyperty: HypertyUrl,
    /// The user.
    pub user: UserUrl,
    /// An assertion obtained elsewhere.
    pub assertion: Option<String>,
}

/// Removes a hyperty's binding. Answers whether there was one.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "bool")]
pub struct UnbindIdentity {
    /// The hyperty.
    pub hyperty: HypertyUrl,
}

/// The assertion bound to a hyperty, if any.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Option<IdentityAssertion>")]
pub struct BoundIdentity {
    /// The hyperty.
    pub hyperty: HypertyUrl,
}

/// Renews the bindings whose assertions expire within
/// [`refresh_margin_secs`](IdmConfig::refresh_margin_secs) and drops those that
/// expired and cannot be renewed (their hyperties become anonymous). Runs every
/// [`refresh_interval_secs`](IdmConfig::refresh_interval_secs); answers how many
/// were renewed.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "usize")]
pub struct RefreshBindings;

/// Fetches a provider's keys now (joining a fetch under way), e.g. to warm the
/// cache the synchronous [`AssertionCheck`] reads. Answers how many keys it holds.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<usize, IdentityError>")]
pub struct FetchKeys {
    /// The provider's domain.
    pub idp: String,
}

/// Answers once the module listens on the bus and its interceptor is installed
/// (or with the reason it could not be).
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "Result<(), IdentityError>")]
pub struct Ready;

/// Drops a binding if its assertion has expired (internal, after a failed renewal).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
struct ExpireBinding(Arc<str>);

struct Session {
    idp: String,
    id_token: Secret,
    expires: u64,
}

type Fetch = Shared<LocalBoxFuture<'static, Result<usize, IdentityError>>>;

/// The Identity Module of a runtime (see the module docs).
pub struct IdentityModule {
    bus: Bus,
    address: Address,
    config: Arc<IdmConfig>,
    clock: Arc<dyn Clock>,
    client: awc::Client,
    cache: Arc<JwksCache>,
    check: AssertionCheck,
    bindings: Bindings,
    sessions: HashMap<UserUrl, Session>,
    inflight: HashMap<String, Fetch>,
    prefetch: Option<mpsc::Receiver<Prefetch>>,
    install_error: Option<IdentityError>,
}

impl std::fmt::Debug for IdentityModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityModule")
            .field("address", &self.address)
            .field("sessions", &self.sessions.len())
            .field("bindings", &self.bindings.len())
            .finish_non_exhaustive()
    }
}

type Act<T> = ResponseActFuture<IdentityModule, T>;

fn ready<T: 'static>(v: T) -> Act<T> {
    Box::pin(actix::fut::ready(v))
}

impl IdentityModule {
    /// A module for the runtime of `bus`, at `<runtimeURL>/idm`. Start it with
    /// `Actor::start` (or use [`IdmHandle::start`]): it then listens on the bus and
    /// installs its [`IdentityInterceptor`].
    pub fn new(
        bus: Bus,
        config: IdmConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<IdentityModule, IdentityError> {
        config.validate()?;
        let config = Arc::new(config);
        let cache = Arc::new(JwksCache::new(config.max_cached_idps, config.jwks_ttl_secs));
        let (tx, rx) = mpsc::channel(PREFETCH_QUEUE);
        let check = AssertionCheck::new(cache.clone(), config.clone(), clock.clone(), tx);
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(Duration::from_millis(config.fetch_timeout_ms))
            .finish();
        Ok(IdentityModule {
            address: bus.runtime_url().component("idm"),
            bus,
            config,
            clock,
            client,
            cache,
            check,
            bindings: Arc::new(DashMap::new()),
            sessions: HashMap::new(),
            inflight: HashMap::new(),
            prefetch: Some(rx),
            install_error: None,
        })
    }

    /// The synchronous, cache-only assertion verifier (for the policy engine).
    pub fn verifier(&self) -> AssertionCheck {
        self.check.clone()
    }

    /// The outgoing-pipeline step adding `body.identity` (installed on start).
    pub fn interceptor(&self) -> IdentityInterceptor {
        IdentityInterceptor::new(self.bindings.clone(), self.config.mark_anonymous)
    }

    /// `<runtimeURL>/idm`.
    pub fn address(&self) -> &Address {
        &self.address
    }

    fn now(&self) -> u64 {
        self.clock.now_secs()
    }

    fn purge_sessions(&mut self) {
        let now = self.now();
        self.sessions.retain(|_, s| s.expires > now);
    }

    fn login(&mut self, m: LoginUser) -> Act<Result<UserSession, IdentityError>> {
        let Some(base) = self.config.endpoint(&m.idp) else {
            return ready(Err(IdentityError::UnknownIdp(m.idp)));
        };
        self.purge_sessions();
        let idp = m.idp;
        let body = json!({
            "username": m.username,
            "password": m.password.expose(),
            "deviceToken": m.device_token.as_ref().map(Secret::expose),
        });
        let call = post(self.client.clone(), format!("{base}/idp/login"), None, body);
        Box::pin(call.into_actor(self).map(move |res, act, _| {
            let unreachable = |reason: String| IdentityError::IdpUnreachable {
                idp: idp.clone(),
                reason,
            };
            let (status, v) = res.map_err(unreachable)?;
            match status {
                200 => {}
                401 => return Err(IdentityError::BadCredentials),
                other => return Err(refusal(other, &idp)),
            }
            let token = v
                .get("idToken")
                .and_then(Value::as_str)
                .ok_or_else(|| unreachable("malformed login answer".into()))?;
            let user: UserUrl = v
                .get("userURL")
                .and_then(Value::as_str)
                .and_then(|u| u.parse().ok())
                .ok_or_else(|| unreachable("malformed login answer".into()))?;
            if user.domain() != Some(idp.as_str()) {
                return Err(IdentityError::IdentityMismatch(
                    "the provider answered for a user of another domain",
                ));
            }
            let expires = v.get("expires").and_then(Value::as_u64).unwrap_or(0);
            if !act.sessions.contains_key(&user) && act.sessions.len() >= act.config.max_sessions {
                return Err(IdentityError::Full {
                    table: "the session table",
                    limit: act.config.max_sessions,
                });
            }
            info!(user = %user, "user logged in at this runtime");
            act.sessions.insert(
                user.clone(),
                Session {
                    idp: idp.clone(),
                    id_token: Secret::new(token),
                    expires,
                },
            );
            Ok(UserSession { user, idp, expires })
        }))
    }

    fn generate(
        &mut self,
        user: UserUrl,
        hyperty: HypertyUrl,
        audience: Option<String>,
    ) -> Act<Result<IdentityAssertion, IdentityError>> {
        let now = self.now();
        let (idp, token) = match self.sessions.get(&user) {
            Some(s) if s.expires > now => (s.idp.clone(), s.id_token.clone()),
            _ => {
                self.sessions.remove(&user);
                return ready(Err(IdentityError::NotLoggedIn(user.to_string())));
            }
        };
        let Some(base) = self.config.endpoint(&idp) else {
            return ready(Err(IdentityError::UnknownIdp(idp)));
        };
        let body = json!({
            "hyperty": hyperty,
            "audience": audience.unwrap_or_else(|| self.config.assertion_audience.clone()),
        });
        let call = post(
            self.client.clone(),
            format!("{base}/idp/assertions"),
            Some(token),
            body,
        );
        Box::pin(call.into_actor(self).map(move |res, act, _| {
            let malformed = || IdentityError::IdpUnreachable {
                idp: idp.clone(),
                reason: "malformed assertion answer".to_owned(),
            };
            let (status, v) = res.map_err(|reason| IdentityError::IdpUnreachable {
                idp: idp.clone(),
                reason,
            })?;
            match status {
                200 => {}
                401 => {
                    act.sessions.remove(&user);
                    return Err(IdentityError::NotLoggedIn(user.to_string()));
                }
                other => return Err(refusal(other, &idp)),
            }
            let a: IdentityAssertion = serde_json::from_value(v).map_err(|_| malformed())?;
            if a.hyperty != hyperty.as_str() || a.user_profile.user_url != user.as_str() {
                return Err(malformed());
            }
            debug!(user = %user, hyperty = %hyperty, "assertion generated");
            Ok(a)
        }))
    }

    /// Starts (or joins) a fetch of `idp`'s keys.
    fn fetch_keys(&mut self, idp: &str, ctx: &mut Context<Self>) -> Result<Fetch, IdentityError> {
        if let Some(f) = self.inflight.get(idp) {
            return Ok(f.clone());
        }
        if self.inflight.len() >= self.config.max_cached_idps {
            return Err(IdentityError::Busy);
        }
        let base = self
            .config
            .endpoint(idp)
            .ok_or_else(|| IdentityError::UnknownIdp(idp.to_owned()))?;
        self.cache.mark_attempt(idp, self.now());
        let fetch = fetch_jwks(
            self.client.clone(),
            format!("{base}/.well-known/jwks.json"),
            idp.to_owned(),
            self.config.clone(),
            self.cache.clone(),
            self.clock.clone(),
        )
        .boxed_local()
        .shared();
        self.inflight.insert(idp.to_owned(), fetch.clone());
        let key = idp.to_owned();
        // drives the fetch even if every waiter goes away, then forgets it
        ctx.spawn(fetch.clone().into_actor(self).map(move |res, act, _| {
            if let Err(e) = res {
                warn!(idp = %key, error = %e, "fetching provider keys failed");
            }
            act.inflight.remove(&key);
        }));
        Ok(fetch)
    }

    fn validate(
        &mut self,
        assertion: String,
        idp_hint: Option<String>,
        audience: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Act<Result<VerifiedIdentity, IdentityError>> {
        let (idp, miss) =
            match self
                .check
                .check_cached(&assertion, idp_hint.as_deref(), audience.as_deref())
            {
                Err(e) => return ready(Err(e)),
                Ok(Ok(v)) => return ready(Ok(v)),
                Ok(Err(m)) => m,
            };
        let due = self.inflight.contains_key(&idp)
            || self
                .cache
                .fetch_due(&idp, self.now(), self.config.jwks_refetch_interval_secs);
        if !due {
            return ready(Err(miss_error(&idp, miss)));
        }
        let fetch = match self.fetch_keys(&idp, ctx) {
            Ok(f) => f,
            Err(e) => return ready(Err(e)),
        };
        Box::pin(fetch.into_actor(self).map(move |res, act, _| {
            res?;
            match act
                .check
                .check_cached(&assertion, idp_hint.as_deref(), audience.as_deref())?
            {
                Ok(v) => Ok(v),
                Err((idp, miss)) => Err(miss_error(&idp, miss)),
            }
        }))
    }

    fn bind(&mut self, m: BindIdentity) -> Act<Result<IdentityAssertion, IdentityError>> {
        if let Some(e) = &self.install_error {
            return ready(Err(e.clone()));
        }
        if !self.bindings.contains_key(m.hyperty.as_str())
            && self.bindings.len() >= self.config.max_bindings
        {
            return ready(Err(IdentityError::Full {
                table: "the identity bindings",
                limit: self.config.max_bindings,
            }));
        }
        let BindIdentity {
            hyperty,
            user,
            assertion,
        } = m;
        let obtained: Act<Result<String, IdentityError>> = match assertion {
            Some(a) => ready(Ok(a)),
            None => Box::pin(
                self.generate(user.clone(), hyperty.clone(), None)
                    .map(|r, _, _| r.map(|a| a.assertion)),
            ),
        };
        let audience = self.config.assertion_audience.clone();
        Box::pin(obtained.then(move |res, act, ctx| {
            let assertion = match res {
                Ok(a) => a,
                Err(e) => return ready(Err(e)),
            };
            let idp = user.domain().map(str::to_owned);
            let checked = act.validate(assertion.clone(), idp, Some(audience), ctx);
            Box::pin(checked.map(move |res, act, _| {
                let v = res?;
                if v.user != user {
                    return Err(IdentityError::IdentityMismatch(
                        "the assertion is about another user",
                    ));
                }
                if v.hyperty.as_ref() != Some(&hyperty) {
                    return Err(IdentityError::IdentityMismatch(
                        "the assertion binds another hyperty",
                    ));
                }
                let bound = IdentityAssertion {
                    assertion,
                    idp: v.idp,
                    user_profile: v.user_profile,
                    hyperty: hyperty.to_string(),
                    expires: v.expires,
                };
                act.bindings.insert(
                    hyperty.shared().clone(),
                    Arc::new(Binding {
                        user: user.clone(),
                        expires: bound.expires,
                        identity: bound.to_identity(),
                        assertion: bound.clone(),
                    }),
                );
                info!(hyperty = %hyperty, user = %user, "identity bound to hyperty");
                Ok(bound)
            })) as Act<_>
        }))
    }

    /// Answers a reTHINK request to `<runtimeURL>/idm`.
    fn wire(&mut self, req: Message, ctx: &mut Context<Self>) -> Act<Message> {
        let (method, params) = match super::wire::method_of(&req) {
            Ok((m, p)) => (m.to_owned(), p.clone()),
            Err(e) => return ready(error_response(&req, &e)),
        };
        let str_param = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_owned);
        match method.as_str() {
            "validateAssertion" => {
                let identity = params.get("identity");
                let assertion = str_param("assertion").or_else(|| {
                    identity
                        .and_then(|i| i.get("assertion"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                let idp = str_param("idp").or_else(|| {
                    identity
                        .and_then(|i| i.get("idp"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                let Some(assertion) = assertion else {
                    let e = IdentityError::missing("params.assertion");
                    return ready(error_response(&req, &e));
                };
                let checked = self.validate(assertion, idp, str_param("audience"), ctx);
                Box::pin(checked.map(move |res, _, _| match res {
                    Ok(v) => req.reply_value(
                        ResponseCode::Ok,
                        serde_json::to_value(v).unwrap_or_default(),
                    ),
                    Err(e) => error_response(&req, &e),
                }))
            }
            "generateAssertion" | "getIdentity" => {
                let bound = self.bindings.get(req.from.as_str()).map(|b| b.clone());
                let Some(bound) = bound else {
                    let e =
                        IdentityError::NotFound(format!("no identity is bound to {}", req.from));
                    return ready(error_response(&req, &e));
                };
                if method == "getIdentity" {
                    let value = bound.identity.clone();
                    return ready(req.reply_value(ResponseCode::Ok, value));
                }
                let Ok(hyperty) = HypertyUrl::from_address(req.from.clone()) else {
                    let e = IdentityError::invalid("from", "a hyperty URL");
                    return ready(error_response(&req, &e));
                };
                let generated = self.generate(bound.user.clone(), hyperty, str_param("audience"));
                Box::pin(generated.map(move |res, _, _| match res {
                    Ok(a) => {
                        let mut value = serde_json::to_value(&a).unwrap_or_default();
                        value["identity"] = a.to_identity();
                        req.reply_value(ResponseCode::Ok, value)
                    }
                    Err(e) => error_response(&req, &e),
                }))
            }
            other => {
                let name = super::verifier::short(other);
                let e = IdentityError::Unsupported(format!("method {name:?}"));
                ready(error_response(&req, &e))
            }
        }
    }
}

/// The error of a verification that could not find keys (after fetching, or
/// when a fetch is not due yet).
fn miss_error(idp: &str, miss: Miss) -> IdentityError {
    match miss {
        Miss::UnknownKid(kid) => IdentityError::UnknownKey(kid),
        Miss::NoKeys => IdentityError::IdpUnreachable {
            idp: idp.to_owned(),
            reason: "its keys could not be fetched recently; try again later".to_owned(),
        },
    }
}

/// A provider's non-success answer.
fn refusal(status: u16, idp: &str) -> IdentityError {
    match status {
        429 => IdentityError::Busy,
        400 => IdentityError::invalid("request", "accepted by the identity provider"),
        other => IdentityError::IdpUnreachable {
            idp: idp.to_owned(),
            reason: format!("HTTP {other}"),
        },
    }
}

/// POSTs JSON and reads a JSON answer (status and body; `null` if not JSON).
async fn post(
    client: awc::Client,
    url: String,
    bearer: Option<Secret>,
    body: Value,
) -> Result<(u16, Value), String> {
    let mut req = client
        .post(&url)
        .insert_header((header::ACCEPT, "application/json"));
    if let Some(t) = &bearer {
        req = req.bearer_auth(t.expose());
    }
    let mut resp = req.send_json(&body).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .body()
        .limit(MAX_IDP_ANSWER)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<Value>,
}

/// Fetches, checks and caches `idp`'s JWK set; answers how many keys it kept.
async fn fetch_jwks(
    client: awc::Client,
    url: String,
    idp: String,
    config: Arc<IdmConfig>,
    cache: Arc<JwksCache>,
    clock: Arc<dyn Clock>,
) -> Result<usize, IdentityError> {
    let unreachable = |reason: String| IdentityError::IdpUnreachable {
        idp: idp.clone(),
        reason,
    };
    debug!(idp = %idp, url = %url, "fetching provider keys");
    let mut resp = client
        .get(&url)
        .insert_header((header::ACCEPT, "application/json"))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(unreachable(format!("HTTP {}", resp.status().as_u16())));
    }
    let body = resp
        .body()
        .limit(config.max_jwks_bytes)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let set: RawJwkSet =
        serde_json::from_slice(&body).map_err(|_| unreachable("not a JWK set".to_owned()))?;
    let keys: HashMap<String, DecodingKey> = set
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| jwk.decoding_key().ok().map(|k| (jwk.kid, k)))
        .take(config.max_keys_per_idp)
        .collect();
    if keys.is_empty() {
        return Err(unreachable("no usable Ed25519 signing keys".to_owned()));
    }
    let n = keys.len();
    cache.store(&idp, keys, clock.now_secs());
    info!(idp = %idp, keys = n, "provider keys cached");
    Ok(n)
}

impl Actor for IdentityModule {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listen = self
            .bus
            .add_listener(self.address.clone(), ctx.address().recipient(), None);
        let intercept = self.bus.add_interceptor(Arc::new(self.interceptor()));
        // hold the mailbox until both are in place, so Ready and BindIdentity
        // answer only once outgoing messages are intercepted
        ctx.wait(
            async move { (listen.await, intercept.await) }
                .into_actor(self)
                .map(|(listen, intercept), act, _| {
                    let failed = listen.err().or(intercept.err());
                    if let Some(e) = failed {
                        warn!(error = %e, "identity module could not join the bus");
                        act.install_error = Some(IdentityError::InvalidConfig(format!(
                            "cannot install the identity module on the bus: {e}"
                        )));
                    } else {
                        info!(address = %act.address, "identity module started");
                    }
                }),
        );
        if let Some(mut rx) = self.prefetch.take() {
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        }
        ctx.run_interval(
            Duration::from_secs(self.config.refresh_interval_secs),
            |act, ctx| {
                act.purge_sessions();
                ctx.notify(RefreshBindings);
            },
        );
    }
}

impl StreamHandler<Prefetch> for IdentityModule {
    fn handle(&mut self, Prefetch(idp): Prefetch, ctx: &mut Context<Self>) {
        let due = !self.inflight.contains_key(&idp)
            && self
                .cache
                .fetch_due(&idp, self.now(), self.config.jwks_refetch_interval_secs);
        if due {
            if let Err(e) = self.fetch_keys(&idp, ctx) {
                debug!(idp = %idp, error = %e, "background key fetch not started");
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // the module holds a sender itself; the stream ends only with the module
    }
}

impl Handler<LoginUser> for IdentityModule {
    type Result = Act<Result<UserSession, IdentityError>>;

    fn handle(&mut self, m: LoginUser, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idm.login", idp = %m.idp).entered();
        self.login(m)
    }
}

impl Handler<LogoutUser> for IdentityModule {
    type Result = usize;

    fn handle(&mut self, m: LogoutUser, _: &mut Context<Self>) -> usize {
        let _span = info_span!("idm.logout", user = %m.user).entered();
        self.sessions.remove(&m.user);
        let before = self.bindings.len();
        self.bindings.retain(|_, b| b.user != m.user);
        before - self.bindings.len()
    }
}

impl Handler<ListSessions> for IdentityModule {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _: ListSessions, _: &mut Context<Self>) -> Self::Result {
        self.purge_sessions();
        let mut list: Vec<UserSession> = self
            .sessions
            .iter()
            .map(|(user, s)| UserSession {
                user: user.clone(),
                idp: s.idp.clone(),
                expires: s.expires,
            })
            .collect();
        list.sort_by(|a, b| a.user.cmp(&b.user));
        MessageResult(list)
    }
}

impl Handler<GenerateAssertion> for IdentityModule {
    type Result = Act<Result<IdentityAssertion, IdentityError>>;

    fn handle(&mut self, m: GenerateAssertion, _: &mut Context<Self>) -> Self::Result {
        let _span =
            info_span!("idm.generate_assertion", user = %m.user, hyperty = %m.hyperty).entered();
        self.generate(m.user, m.hyperty, m.audience)
    }
}

impl Handler<ValidateAssertion> for IdentityModule {
    type Result = Act<Result<VerifiedIdentity, IdentityError>>;

    fn handle(&mut self, m: ValidateAssertion, ctx: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idm.validate_assertion", idp = ?m.idp).entered();
        self.validate(m.assertion, m.idp, m.audience, ctx)
    }
}

impl Handler<BindIdentity> for IdentityModule {
    type Result = Act<Result<IdentityAssertion, IdentityError>>;

    fn handle(&mut self, m: BindIdentity, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("idm.bind_identity", hyperty = %m.hyperty, user = %m.user).entered();
        self.bind(m)
    }
}

impl Handler<UnbindIdentity> for IdentityModule {
    type Result = bool;

    fn handle(&mut self, m: UnbindIdentity, _: &mut Context<Self>) -> bool {
        self.bindings.remove(m.hyperty.as_str()).is_some()
    }
}

impl Handler<BoundIdentity> for IdentityModule {
    type Result = Option<IdentityAssertion>;

    fn handle(&mut self, m: BoundIdentity, _: &mut Context<Self>) -> Self::Result {
        self.bindings
            .get(m.hyperty.as_str())
            .map(|b| b.assertion.clone())
    }
}

impl Handler<RefreshBindings> for IdentityModule {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: RefreshBindings, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let margin = self.config.refresh_margin_secs;
        let sessions = &self.sessions;
        // due: close to expiry, and either renewable to a later expiry (the user's
        // ID token outlives the assertion) or already expired (then dropped)
        let due: Vec<(Arc<str>, UserUrl)> = self
            .bindings
            .iter()
            .filter(|b| b.expires <= now.saturating_add(margin))
            .filter(|b| {
                b.expires <= now || sessions.get(&b.user).is_some_and(|s| s.expires > b.expires)
            })
            .take(MAX_REFRESH_PER_TICK)
            .map(|b| (b.key().clone(), b.user.clone()))
            .collect();
        let me = ctx.address();
        Box::pin(async move {
            let mut renewed = 0;
            for (hyperty, user) in due {
                let Ok(url) = hyperty.parse::<HypertyUrl>() else {
                    continue;
                };
                let rebound = me
                    .send(BindIdentity {
                        hyperty: url,
                        user,
                        assertion: None,
                    })
                    .await;
                match rebound {
                    Ok(Ok(_)) => renewed += 1,
                    _ => me.do_send(ExpireBinding(hyperty)),
                }
            }
            renewed
        })
    }
}

impl Handler<ExpireBinding> for IdentityModule {
    type Result = ();

    fn handle(&mut self, ExpireBinding(hyperty): ExpireBinding, _: &mut Context<Self>) {
        let now = self.now();
        if self
            .bindings
            .remove_if(&hyperty, |_, b| b.expires <= now)
            .is_some()
        {
            warn!(hyperty = %hyperty, "identity binding expired and could not be renewed");
        }
    }
}

impl Handler<FetchKeys> for IdentityModule {
    type Result = Act<Result<usize, IdentityError>>;

    fn handle(&mut self, m: FetchKeys, ctx: &mut Context<Self>) -> Self::Result {
        match self.fetch_keys(&m.idp, ctx) {
            Ok(f) => Box::pin(f.into_actor(self)),
            Err(e) => ready(Err(e)),
        }
    }
}

impl Handler<Ready> for IdentityModule {
    type Result = Result<(), IdentityError>;

    fn handle(&mut self, _: Ready, _: &mut Context<Self>) -> Self::Result {
        match &self.install_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Handler<Deliver> for IdentityModule {
    type Result = ();

    fn handle(&mut self, Deliver(msg): Deliver, ctx: &mut Context<Self>) {
        if msg.is_response() || !msg.kind.expects_response() {
            return;
        }
        let _span = info_span!("idm.request", id = msg.id, from = %msg.from).entered();
        let reply = self.wire(msg, ctx);
        ctx.spawn(reply.map(|reply, act, _| {
            act.bus.send(reply);
        }));
    }
}

/// A started identity module and its synchronous verifier. Cheap to clone.
///
/// ```
/// use hyperty::identity::{IdmConfig, IdmHandle, ListSessions};
/// use hyperty::prelude::*;
///
/// # #[actix::main] async fn main() {
/// let rt = Runtime::start(RuntimeConfig::new("example.com")).unwrap();
/// let idm = IdmHandle::start(rt.bus().clone(), IdmConfig::default()).unwrap();
/// assert_eq!(idm.address().as_str(), format!("{}/idm", rt.url()));
/// assert!(idm.addr().send(ListSessions).await.unwrap().is_empty());
/// # }
/// ```
#[derive(Clone)]
pub struct IdmHandle {
    addr: Addr<IdentityModule>,
    check: AssertionCheck,
    address: Address,
}

impl std::fmt::Debug for IdmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdmHandle")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl IdmHandle {
    /// Starts an identity module on `bus` (system clock).
    pub fn start(bus: Bus, config: IdmConfig) -> Result<IdmHandle, IdentityError> {
        IdmHandle::start_with_clock(bus, config, Arc::new(SystemClock))
    }

    /// Starts an identity module reading time from `clock`: in a runtime, the
    /// runtime's one clock ([`RuntimeConfig::clock`](crate::RuntimeConfig::clock)).
    pub fn start_with_clock(
        bus: Bus,
        config: IdmConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<IdmHandle, IdentityError> {
        let module = IdentityModule::new(bus, config, clock)?;
        let check = module.verifier();
        let address = module.address().clone();
        Ok(IdmHandle {
            addr: module.start(),
            check,
            address,
        })
    }

    /// The actor.
    pub fn addr(&self) -> &Addr<IdentityModule> {
        &self.addr
    }

    /// The synchronous, cache-only assertion verifier.
    pub fn verifier(&self) -> AssertionCheck {
        self.check.clone()
    }

    /// `<runtimeURL>/idm`.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Called when a hyperty is registered, before it starts: binds `user` to it
    /// if given (the user must be logged in), and in any case waits until the
    /// identity interceptor is in place.
    pub async fn hyperty_registered(
        &self,
        hyperty: &HypertyUrl,
        user: Option<&UserUrl>,
    ) -> Result<(), IdentityError> {
        match user {
            Some(user) => self
                .addr
                .send(BindIdentity {
                    hyperty: hyperty.clone(),
                    user: user.clone(),
                    assertion: None,
                })
                .await?
                .map(|_| ()),
            None => self.addr.send(Ready).await?,
        }
    }

    /// Called when a hyperty stops: its binding goes.
    pub fn hyperty_stopped(&self, hyperty: &HypertyUrl) {
        self.addr.do_send(UnbindIdentity {
            hyperty: hyperty.clone(),
        });
    }
}
