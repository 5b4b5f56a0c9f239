//! The hyperty API: writing a hyperty is writing an actix actor.
//!
//! A hyperty is any actor with `Context<Self>` that handles [`Deliver`]. It is built
//! by a factory that receives a [`HypertyContext`]: its own address, the runtime it
//! lives in, and a [`BoundBus`] handle to post requests and await responses, send
//! replies and register listeners for its data objects. The factory is called again
//! whenever the hyperty's sandbox restarts it after a panic.
//!
//! A hyperty never holds another component's actor handle: everything it reaches, it
//! reaches by address through the bus, where interceptors (PEPs) see it. Its bus
//! handle is bound to the addresses its runtime gave it — its URL (and what lies
//! under it) and the data-object addresses [allocated](HypertyContext::allocate)
//! for it — so it cannot send as, listen as or answer for another hyperty, and it
//! cannot inject messages as a protocol stub (see [`crate::bus::bound`]).
//!
//! ```
//! use hyperty_actors::prelude::*;
//!
//! /// Answers every request with 200 and the request's value.
//! struct Echo {
//!     ctx: HypertyContext,
//! }
//!
//! impl Actor for Echo {
//!     type Context = Context<Self>;
//! }
//!
//! impl Handler<Deliver> for Echo {
//!     type Result = ();
//!     fn handle(&mut self, Deliver(msg): Deliver, _: &mut Context<Self>) {
//!         if msg.kind.expects_response() {
//!             let value = msg.body.value.clone().unwrap_or_default();
//!             self.ctx.reply(&msg, ResponseCode::Ok, value);
//!         }
//!     }
//! }
//!
//! let spec = HypertySpec::new("echo", "example.com", |ctx| Echo { ctx });
//! assert_eq!(spec.name(), "echo");
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;
use serde_json::Value;

use crate::address::{Address, HypertyUrl, RuntimeUrl, UserUrl};
use crate::bus::{BoundBus, Bus, Deliver, Holdings};
use crate::error::{BusError, RegistryError};
use crate::message::{Message, MessageType, ResponseCode};
use crate::registry::AllocateObjects;
use crate::routes::ListenerId;
use crate::sandbox::RestartPolicy;
use crate::syncher::{Syncher, SyncherManager};

/// What a hyperty is: an actor with a plain context that takes delivered messages.
pub trait Hyperty: Actor<Context = Context<Self>> + Handler<Deliver> {}
impl<T> Hyperty for T where T: Actor<Context = Context<T>> + Handler<Deliver> {}

/// Everything a hyperty is given at start.
#[derive(Clone)]
pub struct HypertyContext {
    url: HypertyUrl,
    runtime: RuntimeUrl,
    provider: Arc<str>,
    user: Option<UserUrl>,
    bus: BoundBus,
    services: HypertyServices,
    restarts: u32,
}

/// The runtime services a sandbox hands to every hyperty it starts.
#[derive(Debug, Clone, Default)]
pub struct HypertyServices {
    /// Allocates data-object addresses ([`HypertyContext::allocate`]).
    pub allocator: Option<Recipient<AllocateObjects>>,
    /// The runtime's SyncherManager ([`HypertyContext::syncher`]).
    pub syncher: Option<Addr<SyncherManager>>,
}

impl fmt::Debug for HypertyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypertyContext")
            .field("url", &self.url)
            .field("provider", &self.provider)
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

impl HypertyContext {
    pub(crate) fn new(
        holdings: Arc<Holdings>,
        provider: Arc<str>,
        user: Option<UserUrl>,
        bus: Bus,
        services: HypertyServices,
        restarts: u32,
    ) -> Self {
        HypertyContext {
            runtime: bus.runtime_url().clone(),
            url: holdings.hyperty().clone(),
            provider,
            user,
            bus: BoundBus::new(bus, holdings),
            services,
            restarts,
        }
    }

    /// This hyperty's address.
    pub fn url(&self) -> &HypertyUrl {
        &self.url
    }

    /// The runtime it runs in.
    pub fn runtime(&self) -> &RuntimeUrl {
        &self.runtime
    }

    /// The service provider (sandbox) it belongs to.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The user identity bound to it, if any.
    pub fn user(&self) -> Option<&UserUrl> {
        self.user.as_ref()
    }

    /// How many times its sandbox restarted it (0 on the first start).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The bus, bound to this hyperty's addresses.
    pub fn bus(&self) -> &BoundBus {
        &self.bus
    }

    /// A message from this hyperty.
    pub fn message(&self, kind: MessageType, to: Address) -> Message {
        Message::new(kind, self.url.address().clone(), to)
    }

    /// Posts a request from this hyperty and waits for its final response.
    pub fn request(
        &self,
        kind: MessageType,
        to: Address,
        value: Value,
    ) -> impl Future<Output = Result<Message, BusError>> + 'static {
        self.bus.post(self.message(kind, to).with_value(value))
    }

    /// Sends a notification (no response expected).
    pub fn notify(&self, kind: MessageType, to: Address, value: Value) {
        self.bus.send(self.message(kind, to).with_value(value));
    }

    /// Answers `request` with `code` and `value`, from this hyperty.
    pub fn reply(&self, request: &Message, code: ResponseCode, value: Value) {
        let mut r = request.reply_from(self.url.address().clone(), code);
        if !value.is_null() {
            r.body.value = Some(value);
        }
        self.bus.send(r);
    }

    /// Listens on `address` (e.g. a data object's `/changes`) on behalf of this
    /// hyperty; the listener is removed when the hyperty stops or crashes.
    pub fn add_listener(
        &self,
        address: Address,
        recipient: Recipient<Deliver>,
    ) -> impl Future<Output = Result<ListenerId, BusError>> + 'static {
        self.bus.add_listener(address, recipient)
    }

    /// This hyperty's [`Syncher`]: report data objects, observe others'
    /// (rethink-wire.md §9). Its requests go through the bus to `<runtime>/sm`.
    pub fn syncher(&self) -> Syncher {
        Syncher::new(
            self.bus.clone(),
            self.url.clone(),
            self.services.syncher.clone(),
        )
    }

    /// Allocates `number` data-object addresses of `scheme` (e.g. `comm`) for this
    /// hyperty — from the messaging node once the runtime is attached to one — and
    /// adds them to what it holds: it may then send from and listen on them and
    /// what lies under them (`/changes`, `/subscription`, children).
    pub fn allocate(
        &self,
        scheme: &str,
        number: usize,
    ) -> impl Future<Output = Result<Vec<Address>, RegistryError>> + 'static {
        let req = self.services.allocator.as_ref().map(|a| {
            a.send(AllocateObjects {
                hyperty: self.url.clone(),
                scheme: scheme.to_owned(),
                number,
            })
        });
        let holdings = self.bus.holdings().clone();
        async move {
            let req = req.ok_or(RegistryError::Unavailable("registry"))?;
            let list = req
                .await
                .map_err(|_| RegistryError::Unavailable("registry"))??;
            holdings
                .grant(&list)
                .map_err(|_| RegistryError::Full("addresses held by the hyperty"))?;
            Ok(list)
        }
    }
}

/// How a hosted hyperty ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The actor stopped.
    Stopped,
    /// It panicked (the panic message).
    Panicked(String),
}

pub(crate) struct Started {
    pub(crate) recipient: Recipient<Deliver>,
    pub(crate) run: Pin<Box<dyn Future<Output = Exit>>>,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
}

pub(crate) type Starter =
    Arc<dyn Fn(HypertyContext, usize) -> Result<Started, String> + Send + Sync>;

fn panic_text(p: Box<dyn Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// How to build and supervise one hyperty.
#[derive(Clone)]
pub struct HypertySpec {
    name: String,
    provider: String,
    user: Option<UserUrl>,
    url: Option<HypertyUrl>,
    restart: RestartPolicy,
    pub(crate) starter: Starter,
}

impl fmt::Debug for HypertySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypertySpec")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("user", &self.user)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

impl HypertySpec {
    /// A hyperty called `name` of service provider `provider`, built by `factory`.
    /// The factory runs on the sandbox's thread, once per (re)start.
    pub fn new<A, F>(name: impl Into<String>, provider: impl Into<String>, factory: F) -> Self
    where
        A: Hyperty,
        F: Fn(HypertyContext) -> A + Send + Sync + 'static,
    {
        let starter: Starter = Arc::new(move |hctx: HypertyContext, capacity: usize| {
            let actor =
                std::panic::catch_unwind(AssertUnwindSafe(|| factory(hctx))).map_err(panic_text)?;
            let mut ctx = Context::<A>::new();
            ctx.set_mailbox_capacity(capacity);
            let recipient = ctx.address().recipient();
            let fut = ctx.into_future(actor);
            let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let run = Box::pin(async move {
                tokio::select! {
                    r = AssertUnwindSafe(fut).catch_unwind() => match r {
                        Ok(()) => Exit::Stopped,
                        Err(p) => Exit::Panicked(panic_text(p)),
                    },
                    _ = stop_rx => Exit::Stopped,
                }
            });
            Ok(Started {
                recipient,
                run,
                stop,
            })
        });
        HypertySpec {
            name: name.into(),
            provider: provider.into(),
            user: None,
            url: None,
            restart: RestartPolicy::default(),
            starter,
        }
    }

    /// Binds a user identity to the hyperty.
    pub fn with_user(mut self, user: UserUrl) -> Self {
        self.user = Some(user);
        self
    }

    /// Starts the hyperty at `url` instead of a fresh address: a restarted
    /// runtime brings its hyperties back under the URLs they had, so their
    /// data objects resume ([`Syncher::resume_reporters`](crate::syncher::Syncher::resume_reporters)).
    pub fn with_url(mut self, url: HypertyUrl) -> Self {
        self.url = Some(url);
        self
    }

    /// The address it resumes, if [`with_url`](Self::with_url) set one.
    pub fn url(&self) -> Option<&HypertyUrl> {
        self.url.as_ref()
    }

    /// Sets the restart policy.
    pub fn with_restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// The hyperty's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service provider (one sandbox per provider).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The bound user.
    pub fn user(&self) -> Option<&UserUrl> {
        self.user.as_ref()
    }

    /// The restart policy.
    pub fn restart(&self) -> RestartPolicy {
        self.restart
    }
}
