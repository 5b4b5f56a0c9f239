//! Sandboxes: one isolation unit per service provider.
//!
//! A [`Sandbox`] actor runs on its own arbiter (thread) and hosts the hyperties of
//! one service provider on that thread. Each hyperty runs as its own task wrapped in
//! `catch_unwind`, so a panic ends that hyperty only: the sandbox is told at once,
//! fails the requests in flight to it with 500 ([`Bus::fail_requests_to`]), removes
//! its listeners and restarts it from its factory under the same address, unless its
//! [`RestartPolicy`] is exhausted, in which case the hyperty is reported `failed`
//! and unregistered. A hyperty that stops on its own is treated the same way; one
//! stopped through [`StopHyperty`] is not restarted.
//!
//! Every change is reported as `update {value: "live"|"restarted"|"failed"|"stopped", desc}`
//! from the hyperty to `<hypertyURL>/status`, and to the registry as
//! [`HypertyStatusChanged`].
//!
//! A hyperty stuck in a busy loop blocks its sandbox's thread (and only that thread):
//! requests to the sandbox's hyperties then end in 408 timeouts on the callers' side.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::json;
use tracing::{error, info, warn};

use crate::address::{HypertyUrl, UserUrl};
use crate::bus::{Bus, Holdings, RemoveListenersOf};
use crate::error::SandboxError;
use crate::hyperty::{Exit, HypertyContext, HypertyServices, HypertySpec};
use crate::message::{Message, MessageType};
use crate::routes::ListenerId;

/// Default mailbox capacity of a hosted hyperty (a full mailbox answers 429).
pub const DEFAULT_HYPERTY_MAILBOX: usize = 4096;
/// Default bound of hyperties per sandbox.
pub const DEFAULT_MAX_HYPERTIES_PER_SANDBOX: usize = 1024;

/// How often a hyperty may be restarted: at most `max_restarts` within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// Never restart.
    pub fn never() -> Self {
        RestartPolicy {
            max_restarts: 0,
            window: Duration::ZERO,
        }
    }
}

/// Sandbox limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Mailbox capacity of each hyperty.
    pub mailbox_capacity: usize,
    /// Most hyperties in one sandbox.
    pub max_hyperties: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mailbox_capacity: DEFAULT_HYPERTY_MAILBOX,
            max_hyperties: DEFAULT_MAX_HYPERTIES_PER_SANDBOX,
        }
    }
}

/// Lifecycle of a hosted hyperty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HypertyStatus {
    /// Running and listening.
    Live,
    /// Crashed or stopped, and restarted (the reason).
    Restarted(String),
    /// Crashed too often (or failed to start) and was removed (the reason).
    Failed(String),
    /// Stopped on request.
    Stopped,
}

impl HypertyStatus {
    /// The `value` reported on `<hypertyURL>/status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HypertyStatus::Live => "live",
            HypertyStatus::Restarted(_) => "restarted",
            HypertyStatus::Failed(_) => "failed",
            HypertyStatus::Stopped => "stopped",
        }
    }

    fn desc(&self) -> Option<&str> {
        match self {
            HypertyStatus::Restarted(d) | HypertyStatus::Failed(d) => Some(d),
            _ => None,
        }
    }
}

/// Sent by a sandbox to the registry when a hyperty's status changes.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct HypertyStatusChanged {
    /// The hyperty.
    pub url: HypertyUrl,
    /// Its new status.
    pub status: HypertyStatus,
    /// Restarts so far.
    pub restarts: u32,
}

/// Starts a hyperty under an already allocated address.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), SandboxError>")]
pub struct StartHyperty {
    /// Its address.
    pub url: HypertyUrl,
    /// How to build it.
    pub spec: HypertySpec,
}

/// Stops a hyperty for good.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), SandboxError>")]
pub struct StopHyperty(pub HypertyUrl);

/// Lists the hosted hyperties.
#[derive(Debug, actix::Message)]
#[rtype(result = "Vec<HypertyUrl>")]
pub struct ListHosted;

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct Exited {
    url: HypertyUrl,
    generation: u64,
    exit: Exit,
}

struct Hosted {
    spec: HypertySpec,
    /// What the hyperty holds; kept across restarts.
    holdings: Arc<Holdings>,
    user: Option<UserUrl>,
    generation: u64,
    restarts: u32,
    recent: VecDeque<Instant>,
    stopping: bool,
    /// Dropping or firing it ends the running instance.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The isolation unit of one service provider.
pub struct Sandbox {
    provider: Arc<str>,
    bus: Bus,
    registry: Option<Recipient<HypertyStatusChanged>>,
    services: HypertyServices,
    config: SandboxConfig,
    hosted: HashMap<HypertyUrl, Hosted>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("provider", &self.provider)
            .field("hosted", &self.hosted.len())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts a sandbox for `provider` on `arbiter`. `registry` hears of status
    /// changes; `services` are handed to every hyperty it starts.
    pub fn start_in(
        arbiter: &ArbiterHandle,
        provider: &str,
        bus: Bus,
        registry: Option<Recipient<HypertyStatusChanged>>,
        services: HypertyServices,
        config: SandboxConfig,
    ) -> Addr<Sandbox> {
        let provider: Arc<str> = Arc::from(provider);
        Sandbox::start_in_arbiter(arbiter, move |_| Sandbox {
            provider,
            bus,
            registry,
            services,
            config,
            hosted: HashMap::new(),
        })
    }

    /// Builds the hyperty, spawns it on this thread and registers its listener.
    fn launch(
        &mut self,
        url: &HypertyUrl,
        ctx: &mut Context<Self>,
    ) -> Result<ResponseActFuture<Self, Result<ListenerId, SandboxError>>, String> {
        let hosted = self
            .hosted
            .get(url)
            .ok_or_else(|| format!("{url} is not hosted"))?;
        let hctx = HypertyContext::new(
            hosted.holdings.clone(),
            self.provider.clone(),
            hosted.user.clone(),
            self.bus.clone(),
            self.services.clone(),
            hosted.restarts,
        );
        let started = (hosted.spec.starter)(hctx, self.config.mailbox_capacity)?;
        let generation = hosted.generation;
        if let Some(h) = self.hosted.get_mut(url) {
            h.stop = Some(started.stop);
        }
        let me = ctx.address();
        let exit_url = url.clone();
        actix::spawn(async move {
            let exit = started.run.await;
            me.do_send(Exited {
                url: exit_url,
                generation,
                exit,
            });
        });
        let listen = self.bus.add_listener(
            url.address().clone(),
            started.recipient,
            Some(url.address().clone()),
        );
        Ok(Box::pin(
            async move { listen.await.map_err(SandboxError::from) }.into_actor(self),
        ))
    }

    fn report(&self, url: &HypertyUrl, status: HypertyStatus, restarts: u32) {
        let mut m = Message::new(MessageType::Update, url.address().clone(), url.status())
            .with_value(json!(status.as_str()));
        if let Some(d) = status.desc() {
            m.body.desc = Some(json!(d));
        }
        self.bus.send(m);
        if let Some(r) = &self.registry {
            r.do_send(HypertyStatusChanged {
                url: url.clone(),
                status,
                restarts,
            });
        }
    }

    fn drop_listeners(&self, url: &HypertyUrl) {
        self.bus
            .actor()
            .do_send(RemoveListenersOf(url.address().clone()));
    }
}

impl Actor for Sandbox {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        info!(provider = %self.provider, "sandbox started");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        info!(provider = %self.provider, "sandbox stopped");
    }
}

impl Handler<StartHyperty> for Sandbox {
    type Result = ResponseActFuture<Self, Result<(), SandboxError>>;

    fn handle(&mut self, m: StartHyperty, ctx: &mut Context<Self>) -> Self::Result {
        let _span = tracing::info_span!("sandbox.start", hyperty = %m.url).entered();
        if self.hosted.contains_key(&m.url) {
            return Box::pin(fut::ready(Err(SandboxError::AlreadyRunning(
                m.url.to_string(),
            ))));
        }
        if self.hosted.len() >= self.config.max_hyperties {
            return Box::pin(fut::ready(Err(SandboxError::Full(self.hosted.len()))));
        }
        let url = m.url.clone();
        self.hosted.insert(
            url.clone(),
            Hosted {
                holdings: Holdings::new(url.clone()),
                user: m.spec.user().cloned(),
                spec: m.spec,
                generation: 0,
                restarts: 0,
                recent: VecDeque::new(),
                stopping: false,
                stop: None,
            },
        );
        match self.launch(&url, ctx) {
            Ok(listening) => Box::pin(listening.map(move |r, act: &mut Sandbox, _| {
                let r = r.map(|_| ());
                match &r {
                    Ok(()) => act.report(&url, HypertyStatus::Live, 0),
                    Err(e) => {
                        warn!(hyperty = %url, error = %e, "could not register hyperty listener");
                        if let Some(h) = act.hosted.get_mut(&url) {
                            h.stopping = true;
                        }
                    }
                }
                r
            })),
            Err(reason) => {
                self.hosted.remove(&url);
                error!(hyperty = %url, %reason, "hyperty failed to start");
                self.report(&url, HypertyStatus::Failed(reason.clone()), 0);
                Box::pin(fut::ready(Err(SandboxError::Unavailable)))
            }
        }
    }
}

impl Handler<StopHyperty> for Sandbox {
    type Result = Result<(), SandboxError>;

    fn handle(&mut self, m: StopHyperty, _: &mut Context<Self>) -> Self::Result {
        let hosted = self
            .hosted
            .get_mut(&m.0)
            .ok_or_else(|| SandboxError::NotHosted(m.0.to_string()))?;
        hosted.stopping = true;
        if let Some(stop) = hosted.stop.take() {
            let _ = stop.send(());
        }
        self.drop_listeners(&m.0);
        Ok(())
    }
}

impl Handler<ListHosted> for Sandbox {
    type Result = Vec<HypertyUrl>;
    fn handle(&mut self, _: ListHosted, _: &mut Context<Self>) -> Vec<HypertyUrl> {
        self.hosted.keys().cloned().collect()
    }
}

impl Handler<Exited> for Sandbox {
    type Result = ();

    fn handle(&mut self, m: Exited, ctx: &mut Context<Self>) {
        let _span = tracing::info_span!("sandbox.exited", hyperty = %m.url).entered();
        if self.hosted.get(&m.url).map(|h| h.generation) != Some(m.generation) {
            return;
        }
        let failed = self.bus.fail_requests_to(m.url.address());
        self.drop_listeners(&m.url);
        let Some(hosted) = self.hosted.get_mut(&m.url) else {
            return;
        };
        let reason = match &m.exit {
            Exit::Stopped => "stopped".to_owned(),
            Exit::Panicked(p) => format!("panicked: {p}"),
        };
        if hosted.stopping {
            self.hosted.remove(&m.url);
            info!(hyperty = %m.url, "hyperty stopped");
            self.report(&m.url, HypertyStatus::Stopped, 0);
            return;
        }
        error!(hyperty = %m.url, %reason, failed_requests = failed, "hyperty ended unexpectedly");
        let now = Instant::now();
        let policy = hosted.spec.restart();
        while hosted
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.window)
        {
            hosted.recent.pop_front();
        }
        if hosted.recent.len() as u32 >= policy.max_restarts {
            let restarts = hosted.restarts;
            self.hosted.remove(&m.url);
            let why = format!(
                "{reason}; restart limit reached ({} in {:?})",
                policy.max_restarts, policy.window
            );
            error!(hyperty = %m.url, %why, "hyperty failed");
            self.report(&m.url, HypertyStatus::Failed(why), restarts);
            return;
        }
        hosted.recent.push_back(now);
        hosted.restarts += 1;
        hosted.generation += 1;
        let restarts = hosted.restarts;
        let url = m.url.clone();
        match self.launch(&url, ctx) {
            Ok(listening) => {
                ctx.wait(listening.map(move |r, act: &mut Sandbox, _| match r {
                    Ok(_) => {
                        info!(hyperty = %url, restarts, "hyperty restarted");
                        act.report(&url, HypertyStatus::Restarted(reason), restarts);
                    }
                    Err(e) => {
                        warn!(hyperty = %url, error = %e, "restarted hyperty could not listen");
                    }
                }));
            }
            Err(e) => {
                self.hosted.remove(&url);
                self.report(
                    &url,
                    HypertyStatus::Failed(format!("{reason}; restart failed: {e}")),
                    restarts,
                );
            }
        }
    }
}
