//! The Runtime Registry: what runs in a runtime and where addresses lead.
//!
//! The [`RuntimeRegistry`] actor (listening at `<runtime>/registry`) records
//! hyperties, protocol stubs, PEPs, sandboxes and data objects. It
//!
//! * allocates hyperty addresses: `hyperty://<domain>/<uuid>` locally, or from the
//!   messaging node once an [`AllocateAddresses`] allocator is attached
//!   ([`SetAllocator`]);
//! * creates one [`Sandbox`] (own arbiter/thread) per service provider;
//! * is the only writer of the [`StubTable`] the bus routes by, and listens on each
//!   stub's `<stubURL>/status` to track its status;
//! * answers [`Resolve`], [`IsLocal`], [`DiscoverProtostub`] and [`GetSandbox`];
//! * with a stub loader attached ([`SetStubLoader`], the runtime's user agent),
//!   holds messages for a domain without a stub ([`AwaitStub`], from the bus)
//!   while it asks the loader for one ([`LoadStubFor`]), then sends them through
//!   it, or answers 504 naming the domain;
//! * holds each stub's [`StubStats`] and answers [`ListStubStatistics`] with a
//!   snapshot per stub, without a hop through the stubs' mailboxes.
//!
//! [`Resolve`] says *where* an address leads ([`Route`]); it never hands out an
//! actor handle, so nothing can bypass the bus and its interceptors.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use actix::prelude::*;
use tracing::{debug, info, warn};

use crate::address::{Address, AddressKind, DataObjectUrl, HypertyUrl, UserUrl};
use crate::bus::{Bus, Deliver, Interceptor, RemoveAllListeners};
use crate::connectivity::{StubStatistics, StubStats};
use crate::error::RegistryError;
use crate::message::MessageType;
use crate::protostub::StubStatus;
use crate::routes::{AwaitStub, OnDemand, StubDelivery, StubRoute, StubTable};
use crate::sandbox::{HypertyStatus, HypertyStatusChanged, Sandbox, SandboxConfig, StopHyperty};

/// Limits of the registry's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Most hyperties registered at once.
    pub max_hyperties: usize,
    /// Most protocol stubs.
    pub max_stubs: usize,
    /// Most sandboxes (threads).
    pub max_sandboxes: usize,
    /// Most registered data objects.
    pub max_data_objects: usize,
    /// Most PEPs.
    pub max_peps: usize,
    /// How long messages wait for a stub loaded on demand before 504.
    pub stub_load_timeout: std::time::Duration,
    /// Most messages waiting for one domain's stub; beyond, 429.
    pub max_waiting_per_domain: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_hyperties: 10_000,
            max_stubs: 1_000,
            max_sandboxes: 64,
            max_data_objects: 100_000,
            max_peps: 32,
            stub_load_timeout: std::time::Duration::from_secs(10),
            max_waiting_per_domain: 1024,
        }
    }
}

/// Allocates addresses (`<scheme>://<domain>/<id>`), e.g. from the messaging node.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Vec<Address>, RegistryError>")]
pub struct AllocateAddresses {
    /// `hyperty` or a data-object scheme.
    pub scheme: String,
    /// How many.
    pub number: usize,
}

/// Most data-object addresses one [`AllocateObjects`] may ask for.
pub const MAX_OBJECTS_PER_ALLOCATION: usize = 1_000;

/// Allocates data-object addresses (`<scheme>://<domain>/<id>`) for a running
/// hyperty and records it as their owner ([`HypertyContext::allocate`](crate::hyperty::HypertyContext::allocate)
/// sends it and adds them to what the hyperty holds). Uses the attached
/// allocator (the messaging node) if there is one.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Vec<Address>, RegistryError>")]
pub struct AllocateObjects {
    /// The hyperty.
    pub hyperty: HypertyUrl,
    /// A data-object scheme, e.g. `comm`.
    pub scheme: String,
    /// How many, 1 to [`MAX_OBJECTS_PER_ALLOCATION`].
    pub number: usize,
}

/// Hands the runtime's SyncherManager to every hyperty started afterwards
/// ([`HypertyContext::syncher`](crate::hyperty::HypertyContext::syncher)).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct SetSyncher(pub Addr<crate::syncher::SyncherManager>);

/// Attaches (or detaches, with `None`) the address allocator.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct SetAllocator(pub Option<Recipient<AllocateAddresses>>);

/// Registers a hyperty: allocates its address and picks its sandbox.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Registration, RegistryError>")]
pub struct RegisterHyperty {
    /// Its name (descriptor name).
    pub name: String,
    /// Its service provider.
    pub provider: String,
    /// The user bound to it.
    pub user: Option<UserUrl>,
    /// The address it resumes (a restarted runtime's hyperty); `None`: a new one
    /// is allocated.
    pub url: Option<HypertyUrl>,
}

/// The outcome of [`RegisterHyperty`].
#[derive(Debug, Clone)]
pub struct Registration {
    /// The allocated address.
    pub url: HypertyUrl,
    /// The sandbox to start it in.
    pub sandbox: Addr<Sandbox>,
}

/// Unregisters a hyperty and stops it.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct UnregisterHyperty(pub HypertyUrl);

/// What the registry knows of a hyperty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypertyInfo {
    /// Its address.
    pub url: HypertyUrl,
    /// Its name.
    pub name: String,
    /// Its provider.
    pub provider: String,
    /// Its user.
    pub user: Option<UserUrl>,
    /// `starting`, `live`, `restarted`.
    pub status: &'static str,
    /// Restarts so far.
    pub restarts: u32,
}

/// Lists registered hyperties.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Vec<HypertyInfo>")]
pub struct ListHyperties;

/// Reserves the URL of a new protocol stub (`<runtime>/protostub/<n>`).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Address, RegistryError>")]
pub struct NextStubUrl;

/// Registers a protocol stub for `domain` (`None`: the default stub, i.e. the
/// bridge to the runtime's own messaging node).
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct RegisterStub {
    /// The domain it serves.
    pub domain: Option<String>,
    /// Its URL (from [`NextStubUrl`]).
    pub url: Address,
    /// Where outbound messages go.
    pub recipient: Recipient<Deliver>,
    /// Its statistics handle ([`StubContext::stats`](crate::protostub::StubContext::stats)).
    pub stats: StubStats,
}

/// Unregisters the stub of a domain; returns its URL.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Address, RegistryError>")]
pub struct UnregisterStub {
    /// The domain (`None`: the default stub).
    pub domain: Option<String>,
}

/// A registered stub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubInfo {
    /// The domain (`None`: default).
    pub domain: Option<String>,
    /// Its URL.
    pub url: Address,
    /// Last reported status.
    pub status: StubStatus,
}

/// Lists the stubs.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Vec<StubInfo>")]
pub struct ListStubs;

/// The connectivity statistics of every stub, the default stub first, then by
/// domain.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Vec<StubStatistics>")]
pub struct ListStubStatistics;

/// The URL of the stub that serves `domain`, if one is registered (`discoverProtostub`).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Option<Address>")]
pub struct DiscoverProtostub(pub String);

/// Asks a stub loader (the runtime's user agent) to load, register and connect
/// the stub of `domain`; `Err` names what failed.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), String>")]
pub struct LoadStubFor {
    /// The domain.
    pub domain: String,
}

/// Attaches (or detaches, with `None`) the stub loader: from then on, a message
/// for another domain that has no stub waits while the loader loads one
/// (bounded by [`RegistryConfig::stub_load_timeout`]), then goes through it; if
/// loading fails, waiting requests are answered 504 naming the domain.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct SetStubLoader(pub Option<Recipient<LoadStubFor>>);

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct StubLoaded {
    domain: String,
    result: Result<(), String>,
}

/// Installs a PEP as a bus interceptor.
#[derive(actix::Message)]
#[rtype(result = "Result<Address, RegistryError>")]
pub struct RegisterPep(pub Arc<dyn Interceptor>);

impl fmt::Debug for RegisterPep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegisterPep({})", self.0.name())
    }
}

/// Removes a PEP by name.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct UnregisterPep(pub String);

/// Records a data object owned by a local hyperty.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct RegisterDataObject {
    /// The object URL.
    pub url: Address,
    /// The reporter.
    pub owner: HypertyUrl,
}

/// Forgets a data object.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "bool")]
pub struct UnregisterDataObject(pub Address);

/// Where an address leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A local listener (hyperty or component) on exactly this address.
    Local,
    /// The protocol stub with this URL.
    Stub(Address),
    /// Nowhere (a message there gets 404).
    Unknown,
}

/// Resolves an address.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Route")]
pub struct Resolve(pub Address);

/// True for addresses of this runtime: its own URL space, registered hyperties and
/// data objects (with `/subscription` stripped), and anything with a local listener.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "bool")]
pub struct IsLocal(pub Address);

/// The sandbox of a hyperty (by its URL) or of a provider (by a URL in its domain).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Option<SandboxInfo>")]
pub struct GetSandbox(pub Address);

/// A sandbox.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    /// Its provider.
    pub provider: String,
    /// The sandbox actor.
    pub addr: Addr<Sandbox>,
}

struct HypertyRecord {
    name: String,
    provider: String,
    user: Option<UserUrl>,
    status: &'static str,
    restarts: u32,
}

struct SandboxRecord {
    addr: Addr<Sandbox>,
    arbiter: Arbiter,
}

/// The runtime registry actor.
pub struct RuntimeRegistry {
    bus: Bus,
    domain: String,
    stubs: Arc<StubTable>,
    config: RegistryConfig,
    sandbox_config: SandboxConfig,
    hyperties: HashMap<HypertyUrl, HypertyRecord>,
    stub_records: HashMap<Option<String>, StubInfo>,
    stub_stats: HashMap<Option<String>, StubStats>,
    next_stub: u64,
    peps: HashMap<String, Address>,
    sandboxes: HashMap<String, SandboxRecord>,
    data_objects: HashMap<Address, HypertyUrl>,
    allocator: Option<Recipient<AllocateAddresses>>,
    syncher: Option<Addr<crate::syncher::SyncherManager>>,
    stub_loader: Option<Recipient<LoadStubFor>>,
    /// Messages waiting for a domain's stub, by domain.
    waiting: HashMap<String, Vec<(Address, Deliver)>>,
}

impl fmt::Debug for RuntimeRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeRegistry")
            .field("runtime", self.bus.runtime_url())
            .field("hyperties", &self.hyperties.len())
            .field("stubs", &self.stub_records.len())
            .finish_non_exhaustive()
    }
}

impl RuntimeRegistry {
    /// A registry for the runtime of `bus`, writing `stubs` (the table the bus reads).
    pub fn new(
        bus: Bus,
        stubs: Arc<StubTable>,
        config: RegistryConfig,
        sandbox_config: SandboxConfig,
    ) -> RuntimeRegistry {
        let domain = bus.runtime_url().domain().unwrap_or("localhost").to_owned();
        RuntimeRegistry {
            bus,
            domain,
            stubs,
            config,
            sandbox_config,
            hyperties: HashMap::new(),
            stub_records: HashMap::new(),
            stub_stats: HashMap::new(),
            next_stub: 0,
            peps: HashMap::new(),
            sandboxes: HashMap::new(),
            data_objects: HashMap::new(),
            allocator: None,
            syncher: None,
            stub_loader: None,
            waiting: HashMap::new(),
        }
    }

    fn sandbox_for(
        &mut self,
        provider: &str,
        ctx: &mut Context<Self>,
    ) -> Result<Addr<Sandbox>, RegistryError> {
        if let Some(s) = self.sandboxes.get(provider) {
            if s.addr.connected() {
                return Ok(s.addr.clone());
            }
        }
        if self.sandboxes.len() >= self.config.max_sandboxes {
            return Err(RegistryError::Full("sandboxes"));
        }
        let arbiter = Arbiter::new();
        let addr = Sandbox::start_in(
            &arbiter.handle(),
            provider,
            self.bus.clone(),
            Some(ctx.address().recipient()),
            crate::hyperty::HypertyServices {
                allocator: Some(ctx.address().recipient()),
                syncher: self.syncher.clone(),
            },
            self.sandbox_config.clone(),
        );
        info!(provider, "sandbox created");
        self.sandboxes.insert(
            provider.to_owned(),
            SandboxRecord {
                addr: addr.clone(),
                arbiter,
            },
        );
        Ok(addr)
    }

    fn is_local(&self, a: &Address) -> bool {
        if a.is_under(self.bus.runtime_url().as_str()) || self.bus.has_listener(a.as_str()) {
            return true;
        }
        if let Ok(h) = HypertyUrl::from_address(a.clone()) {
            if self.hyperties.contains_key(&h) {
                return true;
            }
        }
        let base = a
            .as_str()
            .strip_suffix("/subscription")
            .unwrap_or(a.as_str());
        self.data_objects.contains_key(base)
    }
}

impl Actor for RuntimeRegistry {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        debug!(runtime = %self.bus.runtime_url(), "registry started");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for (_, s) in self.sandboxes.drain() {
            s.arbiter.stop();
        }
    }
}

impl Handler<SetAllocator> for RuntimeRegistry {
    type Result = ();
    fn handle(&mut self, m: SetAllocator, _: &mut Context<Self>) {
        self.allocator = m.0;
    }
}

impl Handler<SetSyncher> for RuntimeRegistry {
    type Result = ();
    fn handle(&mut self, m: SetSyncher, _: &mut Context<Self>) {
        self.syncher = Some(m.0);
    }
}

impl Handler<RegisterHyperty> for RuntimeRegistry {
    type Result = ResponseActFuture<Self, Result<Registration, RegistryError>>;

    fn handle(&mut self, m: RegisterHyperty, ctx: &mut Context<Self>) -> Self::Result {
        let _span =
            tracing::info_span!("registry.register", name = %m.name, provider = %m.provider)
                .entered();
        if self.hyperties.len() >= self.config.max_hyperties {
            return Box::pin(fut::ready(Err(RegistryError::Full("hyperties"))));
        }
        let sandbox = match self.sandbox_for(&m.provider, ctx) {
            Ok(s) => s,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        if let Some(url) = &m.url {
            if self.hyperties.contains_key(url) {
                return Box::pin(fut::ready(Err(RegistryError::Exists(url.to_string()))));
            }
            if url.address().domain() != Some(self.domain.as_str()) {
                return Box::pin(fut::ready(Err(RegistryError::Allocation(format!(
                    "{url} is not an address of {}",
                    self.domain
                )))));
            }
        }
        let allocation = match (&self.allocator, m.url.clone()) {
            (_, Some(url)) => Box::pin(async move { Ok(url) })
                as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>,
            (None, None) => {
                let url = HypertyUrl::generate(&self.domain).map_err(RegistryError::from);
                Box::pin(async move { url })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>
            }
            (Some(a), None) => {
                let req = a.send(AllocateAddresses {
                    scheme: "hyperty".to_owned(),
                    number: 1,
                });
                Box::pin(async move {
                    let list = req
                        .await
                        .map_err(|_| RegistryError::Unavailable("address allocator"))??;
                    let first = list
                        .into_iter()
                        .next()
                        .ok_or_else(|| RegistryError::Allocation("no address allocated".into()))?;
                    Ok(HypertyUrl::from_address(first)?)
                })
            }
        };
        Box::pin(allocation.into_actor(self).map(move |url, act, _| {
            let url = url?;
            if act.hyperties.len() >= act.config.max_hyperties {
                return Err(RegistryError::Full("hyperties"));
            }
            act.hyperties.insert(
                url.clone(),
                HypertyRecord {
                    name: m.name,
                    provider: m.provider,
                    user: m.user,
                    status: "starting",
                    restarts: 0,
                },
            );
            info!(hyperty = %url, "hyperty registered");
            Ok(Registration { url, sandbox })
        }))
    }
}

impl Handler<UnregisterHyperty> for RuntimeRegistry {
    type Result = Result<(), RegistryError>;
    fn handle(&mut self, m: UnregisterHyperty, _: &mut Context<Self>) -> Self::Result {
        let rec = self
            .hyperties
            .remove(&m.0)
            .ok_or_else(|| RegistryError::NotFound(m.0.to_string()))?;
        self.data_objects.retain(|_, owner| *owner != m.0);
        if let Some(s) = self.sandboxes.get(&rec.provider) {
            s.addr.do_send(StopHyperty(m.0.clone()));
        }
        info!(hyperty = %m.0, "hyperty unregistered");
        Ok(())
    }
}

impl Handler<HypertyStatusChanged> for RuntimeRegistry {
    type Result = ();
    fn handle(&mut self, m: HypertyStatusChanged, _: &mut Context<Self>) {
        match m.status {
            HypertyStatus::Failed(_) | HypertyStatus::Stopped => {
                if self.hyperties.remove(&m.url).is_some() {
                    self.data_objects.retain(|_, owner| *owner != m.url);
                    info!(hyperty = %m.url, status = m.status.as_str(), "hyperty removed");
                }
            }
            HypertyStatus::Live | HypertyStatus::Restarted(_) => {
                if let Some(r) = self.hyperties.get_mut(&m.url) {
                    r.status = m.status.as_str();
                    r.restarts = m.restarts;
                }
            }
        }
    }
}

impl Handler<ListHyperties> for RuntimeRegistry {
    type Result = Vec<HypertyInfo>;
    fn handle(&mut self, _: ListHyperties, _: &mut Context<Self>) -> Vec<HypertyInfo> {
        let mut v: Vec<_> = self
            .hyperties
            .iter()
            .map(|(url, r)| HypertyInfo {
                url: url.clone(),
                name: r.name.clone(),
                provider: r.provider.clone(),
                user: r.user.clone(),
                status: r.status,
                restarts: r.restarts,
            })
            .collect();
        v.sort_by(|a, b| a.url.cmp(&b.url));
        v
    }
}

impl Handler<NextStubUrl> for RuntimeRegistry {
    type Result = Result<Address, RegistryError>;
    fn handle(&mut self, _: NextStubUrl, _: &mut Context<Self>) -> Self::Result {
        self.next_stub += 1;
        Ok(self
            .bus
            .runtime_url()
            .join(&format!("protostub/{}", self.next_stub))?)
    }
}

impl Handler<RegisterStub> for RuntimeRegistry {
    type Result = ResponseActFuture<Self, Result<(), RegistryError>>;

    fn handle(&mut self, m: RegisterStub, ctx: &mut Context<Self>) -> Self::Result {
        if !self.stub_records.contains_key(&m.domain)
            && self.stub_records.len() >= self.config.max_stubs
        {
            return Box::pin(fut::ready(Err(RegistryError::Full("stubs"))));
        }
        let route = StubRoute {
            url: m.url.clone(),
            recipient: m.recipient,
        };
        let replaced = match &m.domain {
            Some(d) => self.stubs.insert(d, route),
            None => self.stubs.set_default(Some(route)),
        };
        if let Some(old) = replaced {
            warn!(domain = ?m.domain, old = %old.url, new = %m.url, "stub replaced");
            if let Ok(s) = old.url.join("status") {
                self.bus.actor().do_send(RemoveAllListeners(s));
            }
        }
        self.stub_records.insert(
            m.domain.clone(),
            StubInfo {
                domain: m.domain.clone(),
                url: m.url.clone(),
                status: StubStatus::Created,
            },
        );
        self.stub_stats.insert(m.domain.clone(), m.stats);
        info!(domain = ?m.domain, stub = %m.url, "stub registered");
        let status = match m.url.join("status") {
            Ok(s) => s,
            Err(e) => return Box::pin(fut::ready(Err(e.into()))),
        };
        let listen = self
            .bus
            .add_listener(status, ctx.address().recipient(), None);
        Box::pin(
            async move {
                listen
                    .await
                    .map(|_| ())
                    .map_err(|_| RegistryError::Unavailable("bus"))
            }
            .into_actor(self),
        )
    }
}

impl Handler<UnregisterStub> for RuntimeRegistry {
    type Result = Result<Address, RegistryError>;
    fn handle(&mut self, m: UnregisterStub, _: &mut Context<Self>) -> Self::Result {
        let rec = self
            .stub_records
            .remove(&m.domain)
            .ok_or_else(|| RegistryError::NotFound(format!("stub for {:?}", m.domain)))?;
        self.stub_stats.remove(&m.domain);
        match &m.domain {
            Some(d) => {
                self.stubs.remove(d);
            }
            None => {
                self.stubs.set_default(None);
            }
        }
        if let Ok(s) = rec.url.join("status") {
            self.bus.actor().do_send(RemoveAllListeners(s));
        }
        Ok(rec.url)
    }
}

impl Handler<Deliver> for RuntimeRegistry {
    type Result = ();
    /// Stub status updates (`<stubURL>/status`).
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        if m.kind != MessageType::Update {
            return;
        }
        let Some(status) = m
            .body
            .value
            .as_ref()
            .and_then(|v| v.as_str())
            .and_then(StubStatus::from_wire)
        else {
            return;
        };
        if let Some(rec) = self.stub_records.values_mut().find(|r| r.url == m.from) {
            rec.status = status;
        }
    }
}

impl Handler<ListStubs> for RuntimeRegistry {
    type Result = Vec<StubInfo>;
    fn handle(&mut self, _: ListStubs, _: &mut Context<Self>) -> Vec<StubInfo> {
        self.stub_records.values().cloned().collect()
    }
}

impl Handler<ListStubStatistics> for RuntimeRegistry {
    type Result = Vec<StubStatistics>;
    fn handle(&mut self, _: ListStubStatistics, _: &mut Context<Self>) -> Vec<StubStatistics> {
        let mut v: Vec<StubStatistics> = self
            .stub_records
            .iter()
            .map(|(domain, info)| {
                let stats = self.stub_stats.get(domain).cloned().unwrap_or_default();
                stats.snapshot(info.url.clone(), domain.clone(), info.status)
            })
            .collect();
        v.sort_by(|a, b| a.domain.cmp(&b.domain));
        v
    }
}

impl Handler<DiscoverProtostub> for RuntimeRegistry {
    type Result = Option<Address>;
    fn handle(&mut self, m: DiscoverProtostub, _: &mut Context<Self>) -> Option<Address> {
        self.stubs.stub_for(&m.0)
    }
}

impl Handler<SetStubLoader> for RuntimeRegistry {
    type Result = ();
    fn handle(&mut self, m: SetStubLoader, ctx: &mut Context<Self>) {
        self.stubs.set_on_demand(m.0.as_ref().map(|_| OnDemand {
            own_domain: self.domain.clone(),
            recipient: ctx.address().recipient(),
        }));
        self.stub_loader = m.0;
    }
}

impl Handler<AwaitStub> for RuntimeRegistry {
    type Result = ();
    fn handle(&mut self, m: AwaitStub, ctx: &mut Context<Self>) {
        let _span = tracing::info_span!("registry.await_stub", domain = %m.domain).entered();
        if self.stubs.stub_for(&m.domain).is_some() {
            // registered meanwhile
            return self.flush_one(m.target, m.msg);
        }
        let Some(loader) = self.stub_loader.clone() else {
            return self.answer_unreachable(m.msg.0, &m.domain, "no stub loader");
        };
        let first = !self.waiting.contains_key(&m.domain);
        if !first && self.waiting.len() >= self.config.max_stubs {
            return self.answer_unreachable(m.msg.0, &m.domain, "too many domains loading");
        }
        let queue = self.waiting.entry(m.domain.clone()).or_default();
        if queue.len() >= self.config.max_waiting_per_domain {
            let msg = m.msg.0;
            if msg.kind.expects_response() {
                self.bus.send(msg.reply_error(
                    crate::message::ResponseCode::TooManyRequests,
                    format!("too many messages waiting for the stub of {}", m.domain),
                ));
            }
            return;
        }
        queue.push((m.target, m.msg));
        if !first {
            return;
        }
        info!(domain = %m.domain, "no stub for the domain: loading one");
        let domain = m.domain;
        let timeout = self.config.stub_load_timeout;
        let load = loader.send(LoadStubFor {
            domain: domain.clone(),
        });
        let me = ctx.address();
        actix::spawn(async move {
            let result = match tokio::time::timeout(timeout, load).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err("the stub loader is gone".to_owned()),
                Err(_) => Err(format!("no stub within {timeout:?}")),
            };
            me.do_send(StubLoaded { domain, result });
        });
    }
}

impl Handler<StubLoaded> for RuntimeRegistry {
    type Result = ();
    fn handle(&mut self, m: StubLoaded, _: &mut Context<Self>) {
        let waiting = self.waiting.remove(&m.domain).unwrap_or_default();
        match m.result {
            Ok(()) if self.stubs.stub_for(&m.domain).is_some() => {
                info!(domain = %m.domain, messages = waiting.len(), "stub loaded: waiting messages go through it");
                for (target, msg) in waiting {
                    self.flush_one(target, msg);
                }
            }
            r => {
                let why = r
                    .err()
                    .unwrap_or_else(|| "loaded but not registered".to_owned());
                warn!(domain = %m.domain, reason = %why, messages = waiting.len(), "no stub for the domain");
                for (_, msg) in waiting {
                    self.answer_unreachable(msg.0, &m.domain, &why);
                }
            }
        }
    }
}

impl RuntimeRegistry {
    fn flush_one(&self, target: Address, msg: Deliver) {
        match self.stubs.deliver(&target, msg, None) {
            StubDelivery::Sent(_) => {}
            StubDelivery::Waiting(d) => warn!(domain = %d, "stub vanished while flushing"),
            StubDelivery::NoStub(Deliver(m)) | StubDelivery::Refused(Deliver(m), _) => {
                let d = target.routing_domain().unwrap_or_default().to_owned();
                self.answer_unreachable(m, &d, "the stub refused the message");
            }
        }
    }

    /// 504 "domain unreachable: <domain>: <why>" to a waiting request.
    fn answer_unreachable(&self, msg: crate::message::Message, domain: &str, why: &str) {
        if msg.kind.expects_response() {
            self.bus.send(msg.reply_error(
                crate::message::ResponseCode::GatewayTimeout,
                format!("domain unreachable: {domain}: {why}"),
            ));
        } else {
            debug!(%domain, kind = %msg.kind, "notification for an unreachable domain dropped");
        }
    }
}

impl Handler<RegisterPep> for RuntimeRegistry {
    type Result = ResponseActFuture<Self, Result<Address, RegistryError>>;
    fn handle(&mut self, m: RegisterPep, _: &mut Context<Self>) -> Self::Result {
        if self.peps.len() >= self.config.max_peps {
            return Box::pin(fut::ready(Err(RegistryError::Full("peps"))));
        }
        let name = m.0.name().to_owned();
        if self.peps.contains_key(&name) {
            return Box::pin(fut::ready(Err(RegistryError::Exists(name))));
        }
        let url = match self.bus.runtime_url().join(&format!("pep/{name}")) {
            Ok(u) => u,
            Err(e) => return Box::pin(fut::ready(Err(e.into()))),
        };
        let add = self.bus.add_interceptor(m.0);
        Box::pin(add.into_actor(self).map(move |r, act, _| {
            r.map_err(|e| match e {
                crate::error::BusError::Busy(_) => RegistryError::Full("interceptors"),
                crate::error::BusError::Invalid(_) => RegistryError::Exists(name.clone()),
                _ => RegistryError::Unavailable("bus"),
            })?;
            act.peps.insert(name, url.clone());
            Ok(url)
        }))
    }
}

impl Handler<UnregisterPep> for RuntimeRegistry {
    type Result = ResponseActFuture<Self, Result<(), RegistryError>>;
    fn handle(&mut self, m: UnregisterPep, _: &mut Context<Self>) -> Self::Result {
        let Some(url) = self.peps.remove(&m.0) else {
            return Box::pin(fut::ready(Err(RegistryError::NotFound(m.0))));
        };
        let rm = self.bus.remove_interceptor(&m.0);
        Box::pin(rm.into_actor(self).map(move |removed, act, _| {
            if removed {
                return Ok(());
            }
            // a sealed PEP stays installed, and registered
            act.peps.insert(m.0.clone(), url);
            Err(RegistryError::Sealed(m.0))
        }))
    }
}

impl Handler<RegisterDataObject> for RuntimeRegistry {
    type Result = Result<(), RegistryError>;
    fn handle(&mut self, m: RegisterDataObject, _: &mut Context<Self>) -> Self::Result {
        if !self.data_objects.contains_key(&m.url)
            && self.data_objects.len() >= self.config.max_data_objects
        {
            return Err(RegistryError::Full("data objects"));
        }
        self.data_objects.insert(m.url, m.owner);
        Ok(())
    }
}

impl Handler<AllocateObjects> for RuntimeRegistry {
    type Result = ResponseActFuture<Self, Result<Vec<Address>, RegistryError>>;

    fn handle(&mut self, m: AllocateObjects, _: &mut Context<Self>) -> Self::Result {
        let refuse = |e| Box::pin(fut::ready(Err(e))) as Self::Result;
        if !self.hyperties.contains_key(&m.hyperty) {
            return refuse(RegistryError::NotFound(m.hyperty.to_string()));
        }
        if m.number == 0 || m.number > MAX_OBJECTS_PER_ALLOCATION {
            return refuse(RegistryError::Allocation(format!(
                "between 1 and {MAX_OBJECTS_PER_ALLOCATION} addresses at a time"
            )));
        }
        if self.data_objects.len() + m.number > self.config.max_data_objects {
            return refuse(RegistryError::Full("data objects"));
        }
        let allocation = match &self.allocator {
            None => {
                let local: Result<Vec<Address>, RegistryError> = (0..m.number)
                    .map(|_| {
                        DataObjectUrl::generate(&m.scheme, &self.domain)
                            .map(DataObjectUrl::into_address)
                            .map_err(RegistryError::from)
                    })
                    .collect();
                Box::pin(async move { local })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>
            }
            Some(a) => {
                let req = a.send(AllocateAddresses {
                    scheme: m.scheme.clone(),
                    number: m.number,
                });
                Box::pin(async move {
                    req.await
                        .map_err(|_| RegistryError::Unavailable("address allocator"))?
                })
            }
        };
        Box::pin(allocation.into_actor(self).map(move |list, act, _| {
            let list = list?;
            if list.len() != m.number
                || list.iter().any(|a| a.kind() != AddressKind::DataObject)
            {
                return Err(RegistryError::Allocation(format!(
                    "the allocator did not answer {} {} addresses",
                    m.number, m.scheme
                )));
            }
            if !act.hyperties.contains_key(&m.hyperty) {
                return Err(RegistryError::NotFound(m.hyperty.to_string()));
            }
            if act.data_objects.len() + list.len() > act.config.max_data_objects {
                return Err(RegistryError::Full("data objects"));
            }
            for a in &list {
                act.data_objects.insert(a.clone(), m.hyperty.clone());
            }
            debug!(hyperty = %m.hyperty, scheme = %m.scheme, number = m.number, "objects allocated");
            Ok(list)
        }))
    }
}

impl Handler<UnregisterDataObject> for RuntimeRegistry {
    type Result = bool;
    fn handle(&mut self, m: UnregisterDataObject, _: &mut Context<Self>) -> bool {
        self.data_objects.remove(&m.0).is_some()
    }
}

impl Handler<Resolve> for RuntimeRegistry {
    type Result = MessageResult<Resolve>;
    fn handle(&mut self, m: Resolve, _: &mut Context<Self>) -> Self::Result {
        let a = &m.0;
        let route = if self.bus.has_listener(a.as_str()) {
            Route::Local
        } else if a.is_under(self.bus.runtime_url().as_str()) {
            Route::Unknown
        } else {
            self.stubs
                .resolve_url(a)
                .map_or(Route::Unknown, Route::Stub)
        };
        MessageResult(route)
    }
}

impl Handler<IsLocal> for RuntimeRegistry {
    type Result = bool;
    fn handle(&mut self, m: IsLocal, _: &mut Context<Self>) -> bool {
        self.is_local(&m.0)
    }
}

impl Handler<GetSandbox> for RuntimeRegistry {
    type Result = Option<SandboxInfo>;
    fn handle(&mut self, m: GetSandbox, _: &mut Context<Self>) -> Option<SandboxInfo> {
        let provider = HypertyUrl::from_address(m.0.clone())
            .ok()
            .and_then(|h| self.hyperties.get(&h).map(|r| r.provider.clone()))
            .or_else(|| m.0.domain().map(str::to_owned))?;
        self.sandboxes.get(&provider).map(|s| SandboxInfo {
            provider,
            addr: s.addr.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bus::{BusConfig, MessageBus};
    use crate::message::{Message, ResponseCode};
    use crate::protostub::StubContext;

    /// A stub that answers every request 200.
    struct Answering(StubContext);
    impl Actor for Answering {
        type Context = Context<Self>;
    }
    impl Handler<Deliver> for Answering {
        type Result = ();
        fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
            self.0.inject(m.reply(crate::message::ResponseCode::Ok));
        }
    }

    /// Loads per `mode`: registers an answering stub, refuses, or never answers.
    struct Loader {
        registry: Addr<RuntimeRegistry>,
        bus: Bus,
        mode: &'static str,
    }
    impl Actor for Loader {
        type Context = Context<Self>;
    }
    impl Handler<LoadStubFor> for Loader {
        type Result = ResponseFuture<Result<(), String>>;
        fn handle(&mut self, m: LoadStubFor, _: &mut Context<Self>) -> Self::Result {
            let (registry, bus, mode) = (self.registry.clone(), self.bus.clone(), self.mode);
            Box::pin(async move {
                match mode {
                    "load" => {
                        let url = registry.send(NextStubUrl).await.unwrap().unwrap();
                        let sctx = StubContext::new(url.clone(), Some(m.domain.clone()), bus);
                        let stats = sctx.stats().clone();
                        let stub = Answering(sctx).start();
                        registry
                            .send(RegisterStub {
                                domain: Some(m.domain),
                                url,
                                recipient: stub.recipient(),
                                stats,
                            })
                            .await
                            .unwrap()
                            .map_err(|e| e.to_string())
                    }
                    "refuse" => Err("catalogue unreachable".to_owned()),
                    _ => std::future::pending().await,
                }
            })
        }
    }

    async fn runtime(mode: &'static str) -> (Bus, Addr<RuntimeRegistry>) {
        let stubs = Arc::new(StubTable::default());
        let bus = MessageBus::start(
            "hyperty-runtime://a.org/rt".parse().unwrap(),
            BusConfig::default(),
            stubs.clone(),
        );
        let config = RegistryConfig {
            stub_load_timeout: Duration::from_millis(200),
            ..RegistryConfig::default()
        };
        let registry =
            RuntimeRegistry::new(bus.clone(), stubs, config, SandboxConfig::default()).start();
        let loader = Loader {
            registry: registry.clone(),
            bus: bus.clone(),
            mode,
        }
        .start();
        registry
            .send(SetStubLoader(Some(loader.recipient())))
            .await
            .unwrap();
        (bus, registry)
    }

    fn req(to: &str) -> Message {
        Message::new(
            MessageType::Read,
            "hyperty-runtime://a.org/rt/app".parse().unwrap(),
            to.parse::<Address>().unwrap(),
        )
    }

    #[actix::test]
    async fn waiting_messages_go_through_the_loaded_stub() {
        let (bus, registry) = runtime("load").await;
        let posts: Vec<_> = (0..3).map(|_| bus.post(req("hyperty://b.org/x"))).collect();
        for r in futures_util::future::join_all(posts).await {
            assert_eq!(r.unwrap().code(), Some(ResponseCode::Ok));
        }
        assert!(registry
            .send(DiscoverProtostub("b.org".into()))
            .await
            .unwrap()
            .is_some());
        // the runtime's own domain is never loaded on demand
        assert!(matches!(
            bus.post(req("hyperty://a.org/y")).await,
            Err(crate::error::BusError::NoRoute(_))
        ));
    }

    #[actix::test]
    async fn a_failed_or_slow_load_answers_504_naming_the_domain() {
        for (mode, why) in [
            ("refuse", "catalogue unreachable"),
            ("hang", "no stub within"),
        ] {
            let (bus, registry) = runtime(mode).await;
            let r = bus.post(req("hyperty://c.org/x")).await.unwrap();
            assert_eq!(r.code(), Some(ResponseCode::GatewayTimeout), "{mode}");
            let d = r.body.description.unwrap();
            assert!(d.contains("c.org") && d.contains(why), "{mode}: {d}");
            assert!(registry
                .send(DiscoverProtostub("c.org".into()))
                .await
                .unwrap()
                .is_none());
        }
    }
}
