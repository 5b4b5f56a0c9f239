//! The Hyperty Runtime: the core components wired together.
//!
//! [`Runtime::start`] creates, in the current actix system:
//!
//! ```text
//! RuntimeHandle
//!  ├── MessageBus  (actor on the calling arbiter; Bus handles route on the sender's thread)
//!  ├── RuntimeRegistry (actor on the calling arbiter)
//!  │    └── one Sandbox per service provider, each on its own arbiter (thread)
//!  │         └── hyperties (restarted per their RestartPolicy)
//!  └── EventDispatcher at <runtime>/events (actor on the calling arbiter)
//!       └── LocalEventCache (actor on the calling arbiter; redb database)
//! protocol stubs added with RuntimeHandle::add_stub run on the calling arbiter.
//! RuntimeUa at <runtime>/ua (crate::ua, started with RuntimeUa::start; calling arbiter)
//!   └── downloaded code: one JsSandbox thread each, hosted by a JsHyperty or JsStub actor
//! QosAgent at <runtime>/qos (calling arbiter): the stubs' connectivity statistics,
//!   read from the registry, on request and periodically to a broker (RuntimeConfig::qos).
//! with RuntimeConfig::identity: IdentityModule (calling arbiter) at <runtimeURL>/idm,
//!   plus its identity interceptor on the bus (see crate::identity).
//! SyncherManager at <runtime>/sm (calling arbiter; redb store at RuntimeConfig::syncher.path)
//!      reported and observed data objects; every hyperty reaches it through ctx.syncher()
//! Pdp (with `RuntimeConfig::policy`; calling arbiter) ── listens at <runtime>/pep;
//!      its Pep is registered through the registry as a sealed bus interceptor,
//!      and it is the event dispatcher's policy too (policy::RuntimeEventPolicy)
//! ```
//!
//! Time: [`RuntimeConfig::clock`] is the runtime's one clock. The same instance is
//! handed to the PDP (time conditions), the Identity Module (token and key-cache
//! times), the event dispatcher (expiry, timeouts, backoff, RPC deadlines), the
//! Syncher (`created` / `lastModified`) and the QoS agent (report stamps).
//!
//! Nothing is global: several runtimes can live in one process and never see each
//! other's listeners. [`RuntimeHandle::shutdown`] stops the registry (and with it
//! every sandbox thread) and fails pending requests.
//!
//! ```
//! use hyperty::prelude::*;
//!
//! struct Greeter { ctx: HypertyContext }
//! impl Actor for Greeter { type Context = Context<Self>; }
//! impl Handler<Deliver> for Greeter {
//!     type Result = ();
//!     fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
//!         self.ctx.reply(&m, ResponseCode::Ok, serde_json::json!("hello"));
//!     }
//! }
//!
//! # #[actix::main] async fn main() {
//! let rt = Runtime::start(RuntimeConfig::new("example.com")).unwrap();
//! let greeter = rt
//!     .spawn_hyperty(HypertySpec::new("greeter", "example.com", |ctx| Greeter { ctx }))
//!     .await
//!     .unwrap();
//! let me: Address = rt.url().component("app");
//! let resp = rt.bus()
//!     .post(Message::new(MessageType::Read, me, greeter.into_address()))
//!     .await
//!     .unwrap();
//! assert_eq!(resp.body.value, Some(serde_json::json!("hello")));
//! rt.shutdown().await;
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use actix::prelude::*;
use hyperty_actors::address::{Address, HypertyUrl, RuntimeUrl};
use hyperty_actors::bus::{Bus, BusConfig, MessageBus};
use hyperty_actors::clock::{Clock, SystemClock};
use hyperty_actors::events::{EventDispatcher, EventsConfig, EventsHandle};
use hyperty_actors::hyperty::HypertySpec;
use hyperty_actors::policy::{Pdp, PdpHandle, PolicyConfig};
use hyperty_actors::protostub::{Connect, Disconnect, ProtoStub, StubContext, StubStatus};
use hyperty_actors::qos::{QosAgent, QosConfig};
use hyperty_actors::registry::{
    HypertyInfo, ListHyperties, ListStubs, NextStubUrl, RegisterHyperty, RegisterStub, Resolve,
    Route, RuntimeRegistry, SetAllocator, SetSyncher, StubInfo, UnregisterHyperty, UnregisterStub,
};
use hyperty_actors::routes::StubTable;
use hyperty_actors::sandbox::{SandboxConfig, StartHyperty};
use hyperty_actors::syncher::manager::{RegisterSchema, Shutdown as StopSyncher, WatchStub};
use hyperty_actors::syncher::{SyncherConfig, SyncherManager};

pub use hyperty_actors::registry::RegistryConfig;

use crate::bridge::{BridgeConfig, ClaimAddresses, NodeStub};
use crate::error::RuntimeError;
use crate::identity::{IdmConfig, IdmHandle};

/// Configuration of one runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The service-provider domain the runtime belongs to.
    pub domain: String,
    /// The runtime's id; a UUID is generated when `None`.
    pub runtime_id: Option<String>,
    /// Bus limits and timeout.
    pub bus: BusConfig,
    /// Sandbox limits.
    pub sandbox: SandboxConfig,
    /// Registry limits.
    pub registry: RegistryConfig,
    /// The Identity Module at `<runtimeURL>/idm`; `None`: no identities.
    pub identity: Option<IdmConfig>,
    /// Event dispatcher and Local Event Cache (database path, limits).
    pub events: EventsConfig,
    /// Policy enforcement (a PDP at `<runtime>/pep` and its PEP on the bus);
    /// `None`: no PEP.
    pub policy: Option<PolicyConfig>,
    /// The runtime's one clock, read by the PDP, the Identity Module and the event
    /// dispatcher (default: [`SystemClock`]).
    pub clock: Arc<dyn Clock>,
    /// The QoS user agent at `<runtime>/qos`: where and how often it reports the
    /// stubs' connectivity statistics (see [`hyperty_actors::qos`]).
    pub qos: QosConfig,
    /// The Syncher (store path, history window, limits, check timing).
    pub syncher: SyncherConfig,
}

/// Equal when every section is and both read the same clock instance.
impl PartialEq for RuntimeConfig {
    fn eq(&self, o: &Self) -> bool {
        self.domain == o.domain
            && self.runtime_id == o.runtime_id
            && self.bus == o.bus
            && self.sandbox == o.sandbox
            && self.registry == o.registry
            && self.identity == o.identity
            && self.events == o.events
            && self.policy == o.policy
            && self.qos == o.qos
            && self.syncher == o.syncher
            && Arc::ptr_eq(&self.clock, &o.clock)
    }
}

impl Eq for RuntimeConfig {}

impl RuntimeConfig {
    /// Defaults for a runtime of `domain`.
    pub fn new(domain: impl Into<String>) -> Self {
        RuntimeConfig {
            domain: domain.into(),
            runtime_id: None,
            bus: BusConfig::default(),
            sandbox: SandboxConfig::default(),
            registry: RegistryConfig::default(),
            identity: None,
            events: EventsConfig::default(),
            policy: None,
            clock: Arc::new(SystemClock),
            qos: QosConfig::default(),
            syncher: SyncherConfig::default(),
        }
    }

    /// Reads every time rule of the runtime on `clock` (tests: a
    /// [`ManualClock`](hyperty_actors::clock::ManualClock)).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Starts runtimes.
#[derive(Debug, Clone, Copy)]
pub struct Runtime;

impl Runtime {
    /// Starts a runtime in the current actix system (call it inside
    /// `#[actix::main]`, `#[actix::test]` or a `System`).
    pub fn start(config: RuntimeConfig) -> Result<RuntimeHandle, RuntimeError> {
        let url: RuntimeUrl = match &config.runtime_id {
            Some(id) => format!("hyperty-runtime://{}/{id}", config.domain).parse()?,
            None => RuntimeUrl::generate(&config.domain)?,
        };
        let clock = config.clock;
        // Policies are loaded (and refused) before anything starts.
        let pdp = config
            .policy
            .map(|p| Pdp::new(p).map(|p| p.with_clock(clock.clone())))
            .transpose()?;
        let stubs = Arc::new(StubTable::default());
        let bus = MessageBus::start(url.clone(), config.bus, stubs.clone());
        let registry =
            RuntimeRegistry::new(bus.clone(), stubs, config.registry, config.sandbox).start();
        let qos = QosAgent::new(bus.clone(), registry.clone().recipient(), config.qos)
            .with_clock(clock.clone())
            .start();
        // The PEP registration is the registry's first message (see policy::install).
        let pdp = pdp
            .map(|p| hyperty_actors::policy::install(p, &bus, &registry))
            .transpose()?;
        let idm = match config.identity {
            Some(c) => Some(IdmHandle::start_with_clock(bus.clone(), c, clock.clone())?),
            None => None,
        };
        if let (Some(pdp), Some(idm)) = (&pdp, &idm) {
            // `require-assertion` obligations are checked against the IdM's key cache
            pdp.set_verifier(crate::identity::PolicyVerifier(idm.verifier()));
        }
        let events = EventDispatcher::start(
            bus.clone(),
            registry.clone().recipient(),
            registry.clone().recipient(),
            config.events,
            clock.clone(),
        )?;
        if let Some(pdp) = &pdp {
            // one policy file for messages and events; queued before any dispatch
            events
                .dispatcher()
                .do_send(hyperty_actors::events::dispatcher::AddEventPolicy(
                    std::sync::Arc::new(hyperty_actors::policy::RuntimeEventPolicy(
                        pdp.policies().clone(),
                    )),
                ));
        }
        let syncher = SyncherManager::start(
            bus.clone(),
            Some(registry.clone().recipient()),
            config.syncher,
            clock,
        )?;
        // queued before any hyperty registers
        registry.do_send(SetSyncher(syncher.clone()));
        tracing::info!(runtime = %url, "runtime started");
        Ok(RuntimeHandle {
            url,
            bus,
            registry,
            idm,
            events,
            pdp,
            qos,
            syncher,
        })
    }
}

/// Handle to a running runtime. Cheap to clone.
#[derive(Clone)]
pub struct RuntimeHandle {
    url: RuntimeUrl,
    bus: Bus,
    registry: Addr<RuntimeRegistry>,
    idm: Option<IdmHandle>,
    events: EventsHandle,
    pdp: Option<PdpHandle>,
    qos: Addr<QosAgent>,
    syncher: Addr<SyncherManager>,
}

impl fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("url", &self.url)
            .finish()
    }
}

/// A protocol stub added to a runtime.
#[derive(Debug)]
pub struct StubHandle<S: ProtoStub> {
    /// The stub's URL.
    pub url: Address,
    /// The stub actor.
    pub addr: Addr<S>,
}

impl<S: ProtoStub> Clone for StubHandle<S> {
    fn clone(&self) -> Self {
        StubHandle {
            url: self.url.clone(),
            addr: self.addr.clone(),
        }
    }
}

impl<S: ProtoStub> StubHandle<S> {
    /// Asks the stub to connect.
    pub async fn connect(&self) -> Result<(), RuntimeError> {
        self.addr
            .send(Connect)
            .await
            .map_err(|_| RuntimeError::Unavailable("protocol stub"))??;
        Ok(())
    }

    /// Asks the stub to disconnect.
    pub async fn disconnect(&self) -> Result<(), RuntimeError> {
        self.addr
            .send(Disconnect)
            .await
            .map_err(|_| RuntimeError::Unavailable("protocol stub"))
    }
}

impl RuntimeHandle {
    /// The runtime's URL.
    pub fn url(&self) -> &RuntimeUrl {
        &self.url
    }

    /// The message bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The bus statistics in the Prometheus text exposition format (see
    /// [`metrics`](crate::metrics)), for an embedding application to serve with
    /// `Content-Type:` [`CONTENT_TYPE`](crate::metrics::CONTENT_TYPE).
    pub fn metrics(&self) -> String {
        crate::metrics::render_bus(&self.bus.stats())
    }

    /// The registry actor.
    pub fn registry(&self) -> &Addr<RuntimeRegistry> {
        &self.registry
    }

    /// The Identity Module, if [`RuntimeConfig::identity`] was set.
    pub fn idm(&self) -> Option<&IdmHandle> {
        self.idm.as_ref()
    }

    /// The event system (dispatcher at `<runtime>/events`).
    pub fn events(&self) -> &EventsHandle {
        &self.events
    }

    /// The policy decision point, if the runtime was started with a policy.
    pub fn pdp(&self) -> Option<&PdpHandle> {
        self.pdp.as_ref()
    }

    /// The QoS user agent (at `<runtime>/qos`).
    pub fn qos(&self) -> &Addr<QosAgent> {
        &self.qos
    }

    /// The SyncherManager at `<runtime>/sm`.
    pub fn syncher(&self) -> &Addr<SyncherManager> {
        &self.syncher
    }

    /// Makes a data-object schema known by `name` (e.g. from a hyperty
    /// descriptor), so `create` may name it instead of carrying it.
    pub async fn register_schema(
        &self,
        name: &str,
        schema: serde_json::Value,
    ) -> Result<(), RuntimeError> {
        self.syncher
            .send(RegisterSchema {
                name: name.to_owned(),
                schema,
            })
            .await
            .map_err(|_| RuntimeError::Unavailable("syncher"))??;
        Ok(())
    }

    /// Re-claims `url` at the messaging node, if one is attached (a hyperty
    /// resuming its address after a restart).
    async fn claim(&self, url: &HypertyUrl) -> Result<(), RuntimeError> {
        let domain = self.url.domain().unwrap_or("localhost");
        let to: Address = format!("domain://msg-node.{domain}/address-allocation").parse()?;
        let msg = hyperty_actors::message::Message::new(
            hyperty_actors::message::MessageType::Create,
            self.url.address().clone(),
            to,
        )
        .with_value(serde_json::json!({ "reclaim": [url.as_str()] }));
        match self.bus.post(msg).await {
            Ok(r) if r.code().is_some_and(|c| c.is_success()) => Ok(()),
            Ok(r) => Err(RuntimeError::Registry(
                hyperty_actors::error::RegistryError::Allocation(format!(
                    "the node refused {url}: {}",
                    r.body.description_text().unwrap_or("refused")
                )),
            )),
            // no node attached: the address is only local
            Err(hyperty_actors::error::BusError::NoRoute(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Registers a hyperty, starts it in its provider's sandbox and returns its
    /// address once it listens.
    pub async fn spawn_hyperty(&self, spec: HypertySpec) -> Result<HypertyUrl, RuntimeError> {
        let reg = self
            .registry
            .send(RegisterHyperty {
                name: spec.name().to_owned(),
                provider: spec.provider().to_owned(),
                user: spec.user().cloned(),
                url: spec.url().cloned(),
            })
            .await
            .map_err(|_| RuntimeError::Unavailable("registry"))??;
        if spec.url().is_some() {
            if let Err(e) = self.claim(&reg.url).await {
                let _ = self.registry.send(UnregisterHyperty(reg.url)).await;
                return Err(e);
            }
        }
        if let Some(idm) = &self.idm {
            if let Err(e) = idm.hyperty_registered(&reg.url, spec.user()).await {
                let _ = self.registry.send(UnregisterHyperty(reg.url)).await;
                return Err(e.into());
            }
        }
        let started = match reg
            .sandbox
            .send(StartHyperty {
                url: reg.url.clone(),
                spec,
            })
            .await
        {
            Ok(Ok(())) => return Ok(reg.url),
            Ok(Err(e)) => RuntimeError::from(e),
            Err(_) => RuntimeError::Unavailable("sandbox"),
        };
        if let Some(idm) = &self.idm {
            idm.hyperty_stopped(&reg.url);
        }
        let _ = self.registry.send(UnregisterHyperty(reg.url)).await;
        Err(started)
    }

    /// Deploys a hyperty from a catalogue descriptor (threat T3): the source
    /// package is hashed and must match the descriptor's `sourceHash`, the
    /// descriptor's factory must be in `factories`; only then is the hyperty
    /// registered and started. A mismatch is refused (403) and nothing runs.
    pub async fn deploy_hyperty(
        &self,
        factories: &hyperty_actors::catalogue::FactoryTable,
        descriptor: &hyperty_actors::catalogue::Descriptor,
        package: &[u8],
    ) -> Result<HypertyUrl, RuntimeError> {
        let spec = factories.build(descriptor, package).inspect_err(|e| {
            tracing::warn!(descriptor = %descriptor.name, error = %e, "deployment refused");
        })?;
        self.spawn_hyperty(spec).await
    }

    /// Stops and unregisters a hyperty.
    pub async fn stop_hyperty(&self, url: &HypertyUrl) -> Result<(), RuntimeError> {
        if let Some(idm) = &self.idm {
            idm.hyperty_stopped(url);
        }
        self.registry
            .send(UnregisterHyperty(url.clone()))
            .await
            .map_err(|_| RuntimeError::Unavailable("registry"))??;
        Ok(())
    }

    /// The registered hyperties.
    pub async fn hyperties(&self) -> Vec<HypertyInfo> {
        self.registry.send(ListHyperties).await.unwrap_or_default()
    }

    /// The registered protocol stubs.
    pub async fn stubs(&self) -> Vec<StubInfo> {
        self.registry.send(ListStubs).await.unwrap_or_default()
    }

    /// Where `address` leads.
    pub async fn resolve(&self, address: Address) -> Route {
        self.registry
            .send(Resolve(address))
            .await
            .unwrap_or(Route::Unknown)
    }

    /// Adds a protocol stub for `domain` (`None`: the default route, normally the
    /// bridge to the runtime's messaging node), built by `factory` on the calling
    /// arbiter. It reports `created`; call [`StubHandle::connect`] to connect it.
    pub async fn add_stub<S, F>(
        &self,
        domain: Option<&str>,
        factory: F,
    ) -> Result<StubHandle<S>, RuntimeError>
    where
        S: ProtoStub,
        F: FnOnce(StubContext) -> S,
    {
        let url = self
            .registry
            .send(NextStubUrl)
            .await
            .map_err(|_| RuntimeError::Unavailable("registry"))??;
        let sctx = StubContext::new(url.clone(), domain.map(str::to_owned), self.bus.clone());
        let report = sctx.clone();
        let stats = sctx.stats().clone();
        let addr = S::create(move |_| factory(sctx));
        self.registry
            .send(RegisterStub {
                domain: domain.map(str::to_owned),
                url: url.clone(),
                recipient: addr.clone().recipient(),
                stats,
            })
            .await
            .map_err(|_| RuntimeError::Unavailable("registry"))??;
        // the Syncher renews its node subscriptions whenever the stub comes back
        self.syncher
            .send(WatchStub(url.clone()))
            .await
            .map_err(|_| RuntimeError::Unavailable("syncher"))?;
        report.report(StubStatus::Created, None);
        Ok(StubHandle { url, addr })
    }

    /// Attaches the runtime to its messaging node through the WebSocket bridge: the
    /// bridge becomes the default route and the allocator of hyperty addresses, and
    /// hyperties registered before are claimed at the node. Resolves once the
    /// bridge is live; on error the bridge stays registered and keeps retrying.
    pub async fn attach_node(
        &self,
        config: BridgeConfig,
    ) -> Result<StubHandle<NodeStub>, RuntimeError> {
        let stub = self
            .add_stub(None, move |ctx| NodeStub::new(ctx, config))
            .await?;
        self.registry
            .send(SetAllocator(Some(stub.addr.clone().recipient())))
            .await
            .map_err(|_| RuntimeError::Unavailable("registry"))?;
        stub.connect().await?;
        let existing: Vec<Address> = self
            .hyperties()
            .await
            .into_iter()
            .map(|h| h.url.into_address())
            .collect();
        if !existing.is_empty() {
            stub.addr.do_send(ClaimAddresses(existing));
        }
        Ok(stub)
    }

    /// Removes the stub of `domain`.
    pub async fn remove_stub(&self, domain: Option<&str>) -> Result<Address, RuntimeError> {
        Ok(self
            .registry
            .send(UnregisterStub {
                domain: domain.map(str::to_owned),
            })
            .await
            .map_err(|_| RuntimeError::Unavailable("registry"))??)
    }

    /// Stops the runtime: every sandbox thread ends and pending requests fail.
    pub async fn shutdown(&self) {
        let _ = self.qos.send(hyperty_actors::qos::StopReporting).await;
        if let Ok(Err(e)) = self.syncher.send(StopSyncher).await {
            tracing::warn!(error = %e, "sync store not written at shutdown");
        }
        self.events.shutdown().await;
        self.bus.shutdown();
        // Stopping the registry stops every sandbox arbiter (see its `stopped`).
        let _ = self.registry.send(StopRuntime).await;
    }
}

/// Stops the registry actor (internal).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct StopRuntime;

impl Handler<StopRuntime> for RuntimeRegistry {
    type Result = ();
    fn handle(&mut self, _: StopRuntime, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
