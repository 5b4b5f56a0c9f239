//! The Runtime User Agent at `<runtime>/ua`: loads hyperties and protocol stubs
//! from catalogues, keeps them up to date, and finds hyperties through domain
//! registries (seed 000's runtime calls).
//!
//! | message | what it does | answer |
//! |---|---|---|
//! | [`LoadHyperty`] `{url}` | reads the descriptor at `url` (`hyperty-catalogue://<D>/.well-known/hyperty/<name>` or `http://…`), checks its signature against the signing domain's JWKS and the package's SHA-256, and starts the code in a [`JsSandbox`](crate::jsbox::JsSandbox) at a new hyperty address | the [`HypertyUrl`] |
//! | [`LoadStub`] `{domain}` | the same for `<D>`'s `protocolstub/<stub_name>`: registers it as `<D>`'s stub and connects it | the stub's URL |
//! | [`CheckForUpdate`] `{hyperty}` | reads the hyperty's descriptor again; a higher version replaces the code under the same address, and requests the old code had not answered go to the new code | [`Update`] |
//! | [`DiscoverHyperty`] `{user, criteria}` | asks `domain://registry.<user's domain>` | the registry's entries |
//! | [`RegisterCompiled`] `{spec}` | registers and starts a compiled-in hyperty | the [`HypertyUrl`] |
//! | `LoadStubFor` (from the registry) | [`LoadStub`] when the bus finds no stub for a domain | `Ok` once it is live |
//!
//! Errors are [`UaError`]s naming what failed: an unreachable catalogue (504),
//! a bad signature or hash (403), a descriptor or policies that do not parse
//! (400), a constraint the runtime cannot meet (403), code that fails while
//! loading or a stub that never connects (500; the stub's error names its
//! endpoint). Nothing is half-started: a failure unregisters what was
//! registered and removes the policies it installed.
//!
//! # Constraints and policies
//!
//! Before anything of an object starts (no address registered, no sandbox), its
//! descriptor's `constraints` are matched against [`UaConfig::capabilities`]: an
//! unmet one is [`UaError::Unmet`] (403) naming it, e.g. `constraint "browser" =
//! true not met (the runtime has nothing)`. Its `policies` (policy sets of the
//! runtime's language) are installed into the runtime's PDP under
//! `<object URL>#<set id>`, narrowed to messages to or from that hyperty (a
//! stub: to or from its domain), so a deny rule answers 403 "Blocked by policy"
//! on the object's traffic only. A newer version's sets replace the old ones;
//! a hyperty that fails takes its sets with it. Policies that do not parse, or
//! a runtime without a policy engine, refuse the object.
//!
//! On the wire the agent answers `execute` messages to `<runtime>/ua` with
//! `value: {method: "loadHyperty", url}` / `{method: "loadStub", domain}` /
//! `{method: "checkForUpdate", hyperty}` / `{method: "discoverHyperty", user,
//! criteria}`.

mod admit;
mod fetch;
mod host;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix::prelude::*;
use hyperty_actors::address::{Address, HypertyUrl};
use hyperty_actors::bus::Deliver;
use hyperty_actors::catalogue::{IntegrityError, ObjectType};
use hyperty_actors::error::ToResponseCode;
use hyperty_actors::hyperty::HypertySpec;
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use hyperty_actors::policy::{AddPolicies, PolicySet, RemovePolicies};
use hyperty_actors::protostub::{Connect, StubContext};
use hyperty_actors::registry::{
    LoadStubFor, NextStubUrl, RegisterHyperty, RegisterStub, SetStubLoader, UnregisterHyperty,
    UnregisterStub,
};
use serde_json::{json, Value};
use tracing::{info, warn, Instrument};

use crate::jsbox::{JsError, JsKind, JsLimits, JsSandbox};
use crate::runtime::RuntimeHandle;
pub use fetch::Fetched;
pub use host::{JsHyperty, JsStub, Replace, MAX_UNANSWERED, SOCKET_QUEUE};

/// Configuration of the user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaConfig {
    /// Host:port to reach a domain's catalogue at over plain http, instead of
    /// `https://<domain>` (as the federation's `resolve`).
    pub resolve: BTreeMap<String, String>,
    /// The name of a domain's protocol stub in its catalogue.
    pub stub_name: String,
    /// Each HTTP read (descriptor, key set, package).
    pub fetch_timeout: Duration,
    /// How long a loaded stub may take to report `live`.
    pub connect_timeout: Duration,
    /// Largest descriptor or key set read, bytes.
    pub max_descriptor_bytes: usize,
    /// Largest source package read, bytes.
    pub max_package_bytes: usize,
    /// Largest WebSocket frame a stub takes from its endpoint, bytes (the
    /// built-in bridge's default).
    pub max_frame_bytes: usize,
    /// Limits of each sandbox.
    pub js: JsLimits,
    /// When true the registry asks this agent for the stub of any other domain
    /// the bus finds no stub for (protocol on the fly).
    pub on_the_fly: bool,
    /// What this runtime offers, matched against a descriptor's `constraints`
    /// (see [constraints and policies](self#constraints-and-policies)); by default
    /// `{"node": true, "websocket": true}`: a non-browser runtime whose stubs
    /// may open a WebSocket.
    pub capabilities: serde_json::Map<String, Value>,
}

impl Default for UaConfig {
    fn default() -> Self {
        UaConfig {
            resolve: BTreeMap::new(),
            stub_name: "default".to_owned(),
            fetch_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_descriptor_bytes: 256 * 1024,
            max_package_bytes: 4 << 20,
            max_frame_bytes: 1 << 20,
            js: JsLimits::default(),
            on_the_fly: true,
            capabilities: [("node", true), ("websocket", true)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::Bool(v)))
                .collect(),
        }
    }
}

impl UaConfig {
    /// `http://<resolve entry>` or `https://<domain>`.
    pub fn catalogue_base(&self, domain: &str) -> String {
        match self.resolve.get(domain) {
            Some(h) => format!("http://{h}"),
            None => format!("https://{domain}"),
        }
    }
}

/// Why the agent could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UaError {
    /// Not a catalogue URL.
    #[error("not a catalogue URL: {0}")]
    BadUrl(String),
    /// The catalogue could not be read.
    #[error("catalogue unreachable: {url}: {reason}")]
    Unreachable {
        /// What was read.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The catalogue has no such object.
    #[error("not in the catalogue: {0}")]
    NotFound(String),
    /// The descriptor does not parse or is not what was asked for.
    #[error("bad descriptor at {url}: {reason}")]
    BadDescriptor {
        /// Where it was read.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The signature does not check against the domain's keys.
    #[error("descriptor at {url} refused: {reason}")]
    Signature {
        /// Where it was read.
        url: String,
        /// Why.
        reason: String,
    },
    /// The package is not the one the descriptor names.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// The code failed to start.
    #[error("{name}: {error}")]
    Code {
        /// The object.
        name: String,
        /// Why.
        error: JsError,
    },
    /// The runtime cannot meet what the descriptor requires (a constraint, or
    /// policies with no policy engine to enforce them).
    #[error("{name} refused: {reason}")]
    Unmet {
        /// The object.
        name: String,
        /// What is not met.
        reason: String,
    },
    /// The descriptor's policies cannot be installed.
    #[error("{name}: policies refused: {reason}")]
    Policy {
        /// The object.
        name: String,
        /// Why.
        reason: String,
    },
    /// A stub did not come up.
    #[error("stub for {domain}: {reason}")]
    Stub {
        /// Its domain.
        domain: String,
        /// Why.
        reason: String,
    },
    /// The hyperty was not loaded by this agent.
    #[error("not a downloaded hyperty: {0}")]
    Unknown(String),
    /// A runtime component refused or is gone.
    #[error("runtime: {0}")]
    Runtime(String),
}

impl ToResponseCode for UaError {
    fn response_code(&self) -> ResponseCode {
        match self {
            UaError::BadUrl(_) | UaError::BadDescriptor { .. } | UaError::Policy { .. } => {
                ResponseCode::BadRequest
            }
            UaError::Unmet { .. } => ResponseCode::Forbidden,
            UaError::Unreachable { .. } => ResponseCode::GatewayTimeout,
            UaError::NotFound(_) | UaError::Unknown(_) => ResponseCode::NotFound,
            UaError::Signature { .. } => ResponseCode::Forbidden,
            UaError::Integrity(e) => e.response_code(),
            UaError::Code { .. } | UaError::Stub { .. } | UaError::Runtime(_) => {
                ResponseCode::InternalError
            }
        }
    }
}

/// Loads a hyperty from a catalogue.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<HypertyUrl, UaError>")]
pub struct LoadHyperty {
    /// The descriptor URL.
    pub url: String,
}

/// Loads, registers and connects the protocol stub of a domain.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Address, UaError>")]
pub struct LoadStub {
    /// The domain.
    pub domain: String,
}

/// Checks a downloaded hyperty's descriptor for a newer version.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Update, UaError>")]
pub struct CheckForUpdate {
    /// The hyperty.
    pub hyperty: HypertyUrl,
}

/// What [`CheckForUpdate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Already the newest (its version).
    UpToDate(String),
    /// Replaced: from, to.
    Replaced(String, String),
}

/// Asks the domain registry of `user`'s domain for their hyperties.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Value, UaError>")]
pub struct DiscoverHyperty {
    /// `user://<domain>/<name>`.
    pub user: Address,
    /// `{resources: […], dataSchemes: […]}`, or null.
    pub criteria: Value,
}

/// Registers and starts a compiled-in hyperty.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<HypertyUrl, UaError>")]
pub struct RegisterCompiled(pub HypertySpec);

struct Loaded {
    descriptor_url: String,
    version: Vec<u64>,
    version_text: String,
    host: Addr<JsHyperty>,
    unanswered: host::UnansweredTable,
    /// Ids of the policy sets installed for it.
    policies: Vec<String>,
}

/// The Runtime User Agent actor.
pub struct RuntimeUa {
    config: UaConfig,
    runtime: RuntimeHandle,
    hyperties: HashMap<HypertyUrl, Loaded>,
}

impl std::fmt::Debug for RuntimeUa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeUa")
            .field("runtime", self.runtime.url())
            .field("hyperties", &self.hyperties.len())
            .finish()
    }
}

impl RuntimeUa {
    /// Starts the agent for `runtime` on the calling arbiter, listening at
    /// `<runtime>/ua`; with `config.on_the_fly` it becomes the registry's stub
    /// loader.
    pub async fn start(
        runtime: &RuntimeHandle,
        config: UaConfig,
    ) -> Result<Addr<RuntimeUa>, UaError> {
        let on_the_fly = config.on_the_fly;
        let ua = RuntimeUa {
            config,
            runtime: runtime.clone(),
            hyperties: HashMap::new(),
        }
        .start();
        let at = runtime.url().component("ua");
        runtime
            .bus()
            .add_listener(at, ua.clone().recipient(), None)
            .await
            .map_err(|e| UaError::Runtime(e.to_string()))?;
        if on_the_fly {
            runtime
                .registry()
                .send(SetStubLoader(Some(ua.clone().recipient())))
                .await
                .map_err(|_| UaError::Runtime("registry gone".into()))?;
        }
        info!(runtime = %runtime.url(), on_the_fly, "runtime user agent started");
        Ok(ua)
    }
}

impl Actor for RuntimeUa {
    type Context = Context<Self>;
}

fn gone(what: &str) -> UaError {
    UaError::Runtime(format!("{what} unavailable"))
}

/// Refuses `fetched` before anything starts when the runtime cannot meet its
/// constraints, or its policies do not parse or have no engine to enforce them.
fn check_admission(
    runtime: &RuntimeHandle,
    config: &UaConfig,
    fetched: &Fetched,
) -> Result<(), UaError> {
    let d = &fetched.descriptor;
    let name = || d.object_name.clone();
    if let Some(reason) = admit::unmet_constraint(&d.constraints, &config.capabilities) {
        return Err(UaError::Unmet {
            name: name(),
            reason,
        });
    }
    if d.policies.is_empty() {
        return Ok(());
    }
    let scope = match d.object_type {
        ObjectType::Protocolstub => admit::Scope::Stub(""),
        _ => admit::Scope::Hyperty(""),
    };
    admit::scoped_policies(&d.policies, "", scope).map_err(|reason| UaError::Policy {
        name: name(),
        reason,
    })?;
    if runtime.pdp().is_none() {
        return Err(UaError::Unmet {
            name: name(),
            reason: "it ships policies and this runtime has no policy engine to enforce them"
                .to_owned(),
        });
    }
    Ok(())
}

/// Installs `fetched`'s policies, narrowed to `scope`, under `url`; answers
/// their ids.
async fn install_policies(
    runtime: &RuntimeHandle,
    fetched: &Fetched,
    url: &str,
    scope: admit::Scope<'_>,
) -> Result<Vec<String>, UaError> {
    let d = &fetched.descriptor;
    let (Some(pdp), false) = (runtime.pdp(), d.policies.is_empty()) else {
        return Ok(Vec::new());
    };
    let refused = |reason: String| UaError::Policy {
        name: d.object_name.clone(),
        reason,
    };
    let sets: Vec<PolicySet> = admit::scoped_policies(&d.policies, url, scope).map_err(refused)?;
    let ids = sets.iter().map(|s| s.id.clone()).collect();
    pdp.addr()
        .send(AddPolicies(sets))
        .await
        .map_err(|_| gone("policy engine"))?
        .map_err(|e| refused(e.to_string()))?;
    Ok(ids)
}

/// Removes the policy sets `ids` (installed by [`install_policies`]).
async fn remove_policies(runtime: &RuntimeHandle, ids: Vec<String>) {
    let Some(pdp) = runtime.pdp().filter(|_| !ids.is_empty()) else {
        return;
    };
    match pdp.addr().send(RemovePolicies(ids)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "policies not removed"),
        Err(_) => warn!("policy engine gone"),
    }
}

/// Registers, sandboxes and listens for the hyperty `fetched`; its failure is
/// reported to `ua`.
async fn start_hyperty(
    runtime: RuntimeHandle,
    config: UaConfig,
    fetched: Fetched,
    ua: Recipient<UnregisterHyperty>,
) -> Result<(HypertyUrl, Loaded), UaError> {
    check_admission(&runtime, &config, &fetched)?;
    let d = &fetched.descriptor;
    let reg = runtime
        .registry()
        .send(RegisterHyperty {
            name: d.object_name.clone(),
            provider: fetched.domain.clone(),
            user: None,
            url: None,
        })
        .await
        .map_err(|_| gone("registry"))?
        .map_err(|e| UaError::Runtime(e.to_string()))?;
    let url = reg.url;
    let bus = runtime.bus().clone();
    let policies = match install_policies(
        &runtime,
        &fetched,
        url.as_str(),
        admit::Scope::Hyperty(url.as_str()),
    )
    .await
    {
        Ok(ids) => ids,
        Err(e) => {
            let _ = runtime.registry().send(UnregisterHyperty(url)).await;
            return Err(e);
        }
    };
    let (powers, unanswered) = JsHyperty::powers(&bus, &url, ua);
    let undo = |runtime: RuntimeHandle, url: HypertyUrl, policies: Vec<String>| async move {
        remove_policies(&runtime, policies).await;
        let _ = runtime.registry().send(UnregisterHyperty(url)).await;
    };
    let sandbox = match sandbox_of(&fetched, JsKind::Hyperty, url.as_str(), powers, &config) {
        Ok(s) => s,
        Err(e) => {
            undo(runtime, url, policies).await;
            return Err(e);
        }
    };
    let host = JsHyperty::new(
        url.clone(),
        bus.clone(),
        (sandbox, config.js.inbox),
        unanswered.clone(),
    )
    .start();
    if let Err(e) = bus
        .add_listener(
            url.address().clone(),
            host.clone().recipient(),
            Some(url.address().clone()),
        )
        .await
    {
        undo(runtime, url, policies).await;
        return Err(UaError::Runtime(e.to_string()));
    }
    let status = Message::new(MessageType::Update, url.address().clone(), url.status())
        .with_value(json!("live"));
    bus.send(status);
    let loaded = Loaded {
        descriptor_url: fetched.url.clone(),
        version: d.version_key(),
        version_text: d.version.clone(),
        host,
        unanswered,
        policies,
    };
    Ok((url, loaded))
}

impl Handler<LoadHyperty> for RuntimeUa {
    type Result = ResponseActFuture<Self, Result<HypertyUrl, UaError>>;
    fn handle(&mut self, m: LoadHyperty, ctx: &mut Context<Self>) -> Self::Result {
        let config = self.config.clone();
        let runtime = self.runtime.clone();
        let ua = ctx.address().recipient();
        let span = tracing::info_span!("ua.load_hyperty", url = %m.url);
        let work = async move {
            let fetched = fetch::fetch(&config, &m.url, ObjectType::Hyperty).await?;
            start_hyperty(runtime, config, fetched, ua).await
        }
        .instrument(span);
        Box::pin(work.into_actor(self).map(|r, act, _| {
            let (url, loaded) = r.inspect_err(|e| warn!(error = %e, "hyperty not loaded"))?;
            info!(hyperty = %url, version = %loaded.version_text, "downloaded hyperty live");
            act.hyperties.insert(url.clone(), loaded);
            Ok(url)
        }))
    }
}

/// A downloaded hyperty failed (its host tells the agent instead of the
/// registry): its policies go, then its registration.
impl Handler<UnregisterHyperty> for RuntimeUa {
    type Result = ResponseFuture<Result<(), hyperty_actors::error::RegistryError>>;
    fn handle(&mut self, m: UnregisterHyperty, _: &mut Context<Self>) -> Self::Result {
        let policies = self
            .hyperties
            .remove(&m.0)
            .map(|l| l.policies)
            .unwrap_or_default();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            remove_policies(&runtime, policies).await;
            runtime
                .registry()
                .send(m)
                .await
                .map_err(|_| hyperty_actors::error::RegistryError::Unavailable("registry"))?
        })
    }
}

impl Handler<CheckForUpdate> for RuntimeUa {
    type Result = ResponseActFuture<Self, Result<Update, UaError>>;
    fn handle(&mut self, m: CheckForUpdate, ctx: &mut Context<Self>) -> Self::Result {
        let Some(loaded) = self.hyperties.get(&m.hyperty) else {
            return Box::pin(fut::ready(Err(UaError::Unknown(m.hyperty.to_string()))));
        };
        let config = self.config.clone();
        let runtime = self.runtime.clone();
        let descriptor_url = loaded.descriptor_url.clone();
        let current = loaded.version.clone();
        let current_text = loaded.version_text.clone();
        let host = loaded.host.clone();
        let unanswered = loaded.unanswered.clone();
        let old_policies = loaded.policies.clone();
        let ua = ctx.address().recipient();
        let url = m.hyperty.clone();
        let span = tracing::info_span!("ua.check_for_update", hyperty = %m.hyperty);
        let work = async move {
            let fetched = fetch::fetch(&config, &descriptor_url, ObjectType::Hyperty).await?;
            let d = &fetched.descriptor;
            if d.version_key() <= current {
                return Ok::<_, UaError>((Update::UpToDate(current_text), None));
            }
            check_admission(&runtime, &config, &fetched)?;
            let bus = runtime.bus().clone();
            let powers = JsHyperty::replacement_powers(&bus, &url, ua, &unanswered);
            let sandbox = sandbox_of(&fetched, JsKind::Hyperty, url.as_str(), powers, &config)?;
            // the new version's policies replace the old version's
            let policies = install_policies(
                &runtime,
                &fetched,
                url.as_str(),
                admit::Scope::Hyperty(url.as_str()),
            )
            .await?;
            let gone_sets: Vec<String> = old_policies
                .into_iter()
                .filter(|id| !policies.contains(id))
                .collect();
            remove_policies(&runtime, gone_sets).await;
            host.send(host::Replace(sandbox))
                .await
                .map_err(|_| gone("hyperty host"))??;
            Ok((
                Update::Replaced(current_text, d.version.clone()),
                Some((d.version_key(), d.version.clone(), policies)),
            ))
        }
        .instrument(span);
        let hyperty = m.hyperty;
        Box::pin(work.into_actor(self).map(move |r, act, _| {
            let (update, new) = r?;
            if let (Some((key, text, policies)), Some(l)) = (new, act.hyperties.get_mut(&hyperty)) {
                l.version = key;
                l.version_text = text;
                l.policies = policies;
            }
            Ok(update)
        }))
    }
}

async fn load_stub(
    runtime: RuntimeHandle,
    config: UaConfig,
    domain: String,
) -> Result<Address, UaError> {
    let url = fetch::catalogue_url(&domain, ObjectType::Protocolstub, &config.stub_name);
    let fetched = fetch::fetch(&config, &url, ObjectType::Protocolstub).await?;
    if fetched.domain != domain {
        return Err(UaError::Signature {
            url,
            reason: format!("signed by {}, not {domain}", fetched.domain),
        });
    }
    check_admission(&runtime, &config, &fetched)?;
    let d = &fetched.descriptor;
    let stub_url = runtime
        .registry()
        .send(NextStubUrl)
        .await
        .map_err(|_| gone("registry"))?
        .map_err(|e| UaError::Runtime(e.to_string()))?;
    let sctx = StubContext::new(
        stub_url.clone(),
        Some(domain.clone()),
        runtime.bus().clone(),
    );
    let protocols = d
        .configuration
        .get("protocols")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let (powers, status) = JsStub::powers(
        sctx.clone(),
        d.endpoint().map(str::to_owned),
        protocols,
        (config.connect_timeout, config.max_frame_bytes),
    );
    let policies = install_policies(
        &runtime,
        &fetched,
        stub_url.as_str(),
        admit::Scope::Stub(&domain),
    )
    .await?;
    let sandbox = match sandbox_of(&fetched, JsKind::Stub, stub_url.as_str(), powers, &config) {
        Ok(s) => s,
        Err(e) => {
            remove_policies(&runtime, policies).await;
            return Err(e);
        }
    };
    let stats = sctx.stats().clone();
    let stub = JsStub::new(
        sctx,
        (sandbox, config.js.inbox),
        status,
        config.connect_timeout,
    )
    .start();
    let registered = runtime
        .registry()
        .send(RegisterStub {
            domain: Some(domain.clone()),
            url: stub_url.clone(),
            recipient: stub.clone().recipient(),
            stats,
        })
        .await;
    let registered = match registered {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(UaError::Runtime(e.to_string())),
        Err(_) => Err(gone("registry")),
    };
    if let Err(e) = registered {
        remove_policies(&runtime, policies).await;
        stub.do_send(hyperty_actors::protostub::Disconnect);
        return Err(e);
    }
    let connected = stub.send(Connect).await;
    let reason = match connected {
        Ok(Ok(())) => {
            info!(%domain, stub = %stub_url, version = %d.version, "downloaded stub live");
            return Ok(stub_url);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the stub stopped".to_owned(),
    };
    // nothing half-started: the stub goes
    let _ = runtime
        .registry()
        .send(UnregisterStub {
            domain: Some(domain.clone()),
        })
        .await;
    stub.do_send(hyperty_actors::protostub::Disconnect);
    remove_policies(&runtime, policies).await;
    Err(UaError::Stub { domain, reason })
}

impl Handler<LoadStub> for RuntimeUa {
    type Result = ResponseFuture<Result<Address, UaError>>;
    fn handle(&mut self, m: LoadStub, _: &mut Context<Self>) -> Self::Result {
        let span = tracing::info_span!("ua.load_stub", domain = %m.domain);
        let load = load_stub(self.runtime.clone(), self.config.clone(), m.domain).instrument(span);
        Box::pin(async move {
            load.await
                .inspect_err(|e| warn!(error = %e, "stub not loaded"))
        })
    }
}

impl Handler<LoadStubFor> for RuntimeUa {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, m: LoadStubFor, ctx: &mut Context<Self>) -> Self::Result {
        let load = ctx.address().send(LoadStub { domain: m.domain });
        Box::pin(async move {
            match load.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("user agent gone".to_owned()),
            }
        })
    }
}

impl Handler<DiscoverHyperty> for RuntimeUa {
    type Result = ResponseFuture<Result<Value, UaError>>;
    fn handle(&mut self, m: DiscoverHyperty, _: &mut Context<Self>) -> Self::Result {
        let bus = self.runtime.bus().clone();
        let me = self.runtime.url().component("ua");
        Box::pin(async move {
            let domain = m
                .user
                .domain()
                .ok_or_else(|| UaError::BadUrl(m.user.to_string()))?;
            let registry: Address = format!("domain://registry.{domain}")
                .parse()
                .map_err(|_| UaError::BadUrl(m.user.to_string()))?;
            let mut req = Message::new(MessageType::Read, me, registry);
            req.body.resource = Some(hyperty_actors::message::OneOrMany::One(
                m.user.as_str().to_owned(),
            ));
            if !m.criteria.is_null() {
                req.body.extra.insert("criteria".into(), m.criteria);
            }
            let resp = bus
                .post(req)
                .await
                .map_err(|e| UaError::Runtime(e.to_string()))?;
            match resp.code() {
                Some(ResponseCode::Ok) => Ok(resp.body.value.unwrap_or(Value::Null)),
                Some(ResponseCode::NotFound) => Err(UaError::NotFound(m.user.to_string())),
                c => Err(UaError::Runtime(format!(
                    "registry answered {:?}: {}",
                    c.map(ResponseCode::as_u16),
                    resp.body.description.unwrap_or_default()
                ))),
            }
        })
    }
}

impl Handler<RegisterCompiled> for RuntimeUa {
    type Result = ResponseFuture<Result<HypertyUrl, UaError>>;
    fn handle(&mut self, m: RegisterCompiled, _: &mut Context<Self>) -> Self::Result {
        let runtime = self.runtime.clone();
        Box::pin(async move {
            runtime
                .spawn_hyperty(m.0)
                .await
                .map_err(|e| UaError::Runtime(e.to_string()))
        })
    }
}

/// The wire face: `execute {method, …}` to `<runtime>/ua`.
impl Handler<Deliver> for RuntimeUa {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, ctx: &mut Context<Self>) {
        if m.kind != MessageType::Execute {
            if m.kind.expects_response() {
                self.runtime
                    .bus()
                    .send(m.reply_error(ResponseCode::BadRequest, "the user agent takes execute"));
            }
            return;
        }
        let v = m.body.value.clone().unwrap_or(Value::Null);
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let me = ctx.address();
        let call: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, UaError>>>> =
            match text("method").as_deref() {
                Some("loadHyperty") => {
                    let url = text("url").unwrap_or_default();
                    Box::pin(async move {
                        let r = me
                            .send(LoadHyperty { url })
                            .await
                            .map_err(|_| gone("ua"))??;
                        Ok(json!(r.as_str()))
                    })
                }
                Some("loadStub") => {
                    let domain = text("domain").unwrap_or_default();
                    Box::pin(async move {
                        let r = me
                            .send(LoadStub { domain })
                            .await
                            .map_err(|_| gone("ua"))??;
                        Ok(json!(r.as_str()))
                    })
                }
                Some("checkForUpdate") => {
                    let h = text("hyperty").unwrap_or_default();
                    Box::pin(async move {
                        let hyperty: HypertyUrl =
                            h.parse().map_err(|_| UaError::BadUrl(h.clone()))?;
                        let r = me
                            .send(CheckForUpdate { hyperty })
                            .await
                            .map_err(|_| gone("ua"))??;
                        Ok(match r {
                            Update::UpToDate(v) => json!({"updated": false, "version": v}),
                            Update::Replaced(from, to) => {
                                json!({"updated": true, "from": from, "version": to})
                            }
                        })
                    })
                }
                Some("discoverHyperty") => {
                    let user = text("user").unwrap_or_default();
                    let criteria = v.get("criteria").cloned().unwrap_or(Value::Null);
                    Box::pin(async move {
                        let user: Address =
                            user.parse().map_err(|_| UaError::BadUrl(user.clone()))?;
                        me.send(DiscoverHyperty { user, criteria })
                            .await
                            .map_err(|_| gone("ua"))?
                    })
                }
                _ => Box::pin(async {
                    Err(UaError::BadUrl(
                        "method must be loadHyperty, loadStub, checkForUpdate or discoverHyperty"
                            .to_owned(),
                    ))
                }),
            };
        let bus = self.runtime.bus().clone();
        actix::spawn(async move {
            let reply = match call.await {
                Ok(v) => m.reply_value(ResponseCode::Ok, v),
                Err(e) => m.reply_error(e.response_code(), e.to_string()),
            };
            bus.send(reply);
        });
    }
}

/// Starts `fetched`'s package in a sandbox of `kind` at `url` with `powers`, its
/// descriptor's configuration and `config`'s limits.
fn sandbox_of(
    fetched: &Fetched,
    kind: JsKind,
    url: &str,
    powers: Box<dyn crate::jsbox::JsHost>,
    config: &UaConfig,
) -> Result<JsSandbox, UaError> {
    let d = &fetched.descriptor;
    JsSandbox::start(
        &d.object_name,
        kind,
        url,
        fetched.package.clone(),
        Value::Object(d.configuration.clone()),
        powers,
        config.js.clone(),
    )
    .map_err(|error| UaError::Code {
        name: d.object_name.clone(),
        error,
    })
}
