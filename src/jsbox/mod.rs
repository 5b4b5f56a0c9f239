//! Sandboxed JavaScript for code from a catalogue (QuickJS through `rquickjs`).
//!
//! A [`JsSandbox`] runs one downloaded hyperty or protocol stub on its own
//! thread, in its own QuickJS runtime with a memory limit
//! ([`JsLimits::memory_bytes`]), a stack limit and an interrupt handler that
//! stops any call into the code (the top-level run, a delivered message, a timer)
//! taking longer than [`JsLimits::cpu_per_call`]. The code's only powers are
//! those the prelude (`prelude.js`) gives it:
//!
//! * `bus.listen(f)`, `bus.post(msg)`, `bus.reply(msg, code, value)`,
//!   `bus.refuse(msg, code, description)`: the message
//!   API; what it posts is parsed by the one wire parser and handed to its
//!   [`JsHost`] (a hyperty's host sends it as the hyperty, a stub's host hands it
//!   to the bus as arrived from the wire);
//! * `setTimeout` / `clearTimeout` (at most [`JsLimits::max_timers`] pending),
//!   `console.log` (to `tracing`);
//! * stubs only: `stub.connect()` opens a WebSocket to the one endpoint its
//!   descriptor declares, `stub.report(status, desc)`, `stub.onconnect(f)`.
//!
//! No file, network or process access exists in the engine beyond these. An
//! exception that escapes the code, the interrupt, or the memory limit ends
//! the sandbox: its thread stops, its host is told ([`JsHost::failed`]) and
//! reports `failed` on `<url>/status`; nothing else is affected.
//!
//! Events reach the thread through a bounded queue ([`JsLimits::inbox`]); a full
//! queue refuses the event ([`JsSandbox::deliver`] answers it back).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyperty_actors::message::Message;
use rquickjs::function::Opt;
use rquickjs::{Context, Ctx, Exception, Function, Object, Runtime, Value};
use tracing::{info, warn};

const PRELUDE: &str = include_str!("prelude.js");

/// Limits of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsLimits {
    /// The QuickJS heap limit, bytes.
    pub memory_bytes: usize,
    /// The QuickJS stack limit, bytes.
    pub stack_bytes: usize,
    /// Longest one call into the code may run (wall time on its own thread).
    pub cpu_per_call: Duration,
    /// Events queued for the code.
    pub inbox: usize,
    /// Timers pending at once.
    pub max_timers: usize,
}

impl Default for JsLimits {
    fn default() -> Self {
        JsLimits {
            memory_bytes: 16 << 20,
            stack_bytes: 256 << 10,
            cpu_per_call: Duration::from_millis(500),
            inbox: 1024,
            max_timers: 256,
        }
    }
}

/// What the code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsKind {
    /// A hyperty: `hyperty` global, no sockets.
    Hyperty,
    /// A protocol stub: `stub` global with `connect` to its endpoint.
    Stub,
}

/// The powers behind the prelude, called on the sandbox's thread.
pub trait JsHost: Send + 'static {
    /// `bus.post`: a parsed message.
    fn post(&self, msg: Message) -> Result<(), String>;
    /// `stub.report(status, desc)`.
    fn status(&self, status: &str, desc: Option<&str>);
    /// `stub.connect()`: opens the declared endpoint; events come back as
    /// [`JsEvent::WsOpen`] / [`JsEvent::WsMessage`] / [`JsEvent::WsClosed`].
    fn ws_open(&self, events: JsEvents) -> Result<(), String>;
    /// `socket.send(text)`.
    fn ws_send(&self, text: String) -> Result<(), String>;
    /// `socket.close()`.
    fn ws_close(&self);
    /// The sandbox ended with an error (the reason); the thread is gone.
    fn failed(&self, reason: &str);
}

/// An event for the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsEvent {
    /// A message for `bus.listen` callbacks (the message's JSON).
    Message(String),
    /// The runtime asks a stub to connect.
    Connect,
    /// The runtime asks a stub to disconnect.
    Disconnect,
    /// The stub's socket opened.
    WsOpen,
    /// A text frame arrived on the stub's socket.
    WsMessage(String),
    /// The stub's socket closed (why).
    WsClosed(String),
    /// Ends the sandbox (sent when its [`JsSandbox`] is dropped).
    Stop,
}

/// Why code did not start, or why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsError {
    /// The engine could not be set up.
    #[error("the JavaScript engine could not start: {0}")]
    Engine(String),
    /// The code failed while it loaded (exception, interrupt, memory).
    #[error("the code failed while loading: {0}")]
    Load(String),
    /// The sandbox has ended.
    #[error("the sandbox has stopped")]
    Stopped,
    /// Its event queue is full.
    #[error("the sandbox is busy")]
    Busy,
}

/// A sender of events into a sandbox (cheap to clone, any thread).
#[derive(Debug, Clone)]
pub struct JsEvents(SyncSender<JsEvent>);

impl JsEvents {
    /// Queues `event`; refuses it when the queue is full or the sandbox ended.
    pub fn send(&self, event: JsEvent) -> Result<(), JsError> {
        self.0.try_send(event).map_err(|e| match e {
            TrySendError::Full(_) => JsError::Busy,
            TrySendError::Disconnected(_) => JsError::Stopped,
        })
    }
}

/// A running sandbox. Dropping it ends its thread.
#[derive(Debug)]
pub struct JsSandbox {
    events: JsEvents,
    stop: Arc<AtomicBool>,
}

impl Drop for JsSandbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.events.send(JsEvent::Stop);
    }
}

impl JsSandbox {
    /// Starts `code` for `url` with `configuration` (the descriptor's) on a new
    /// thread. Resolves once the code's top level has run: a load failure
    /// (syntax error, exception, interrupt, memory) is [`JsError::Load`] and
    /// nothing keeps running.
    pub fn start(
        name: &str,
        kind: JsKind,
        url: &str,
        code: String,
        configuration: serde_json::Value,
        host: Box<dyn JsHost>,
        limits: JsLimits,
    ) -> Result<JsSandbox, JsError> {
        let (tx, rx) = mpsc::sync_channel(limits.inbox.max(1));
        let events = JsEvents(tx);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let own = events.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let url = url.to_owned();
        let thread_name = format!("js-{}", name.chars().take(10).collect::<String>());
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let span = tracing::info_span!("jsbox", %url);
                let _enter = span.enter();
                run(
                    kind,
                    &url,
                    &code,
                    configuration,
                    host,
                    limits,
                    (rx, own, stopped),
                    ready_tx,
                )
            })
            .map_err(|e| JsError::Engine(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(JsSandbox { events, stop }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(JsError::Engine("the sandbox thread ended".to_owned())),
        }
    }

    /// A sender of events into this sandbox.
    pub fn events(&self) -> &JsEvents {
        &self.events
    }
}

struct Timers {
    next: u32,
    due: BTreeMap<(Instant, u32), ()>,
    max: usize,
}

/// Formats what the engine threw.
fn thrown(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    if !matches!(e, rquickjs::Error::Exception) {
        return e.to_string();
    }
    let v: Value<'_> = ctx.catch();
    if let Some(ex) = v.as_object().cloned().and_then(Exception::from_object) {
        return ex.message().unwrap_or_else(|| "exception".to_owned());
    }
    match v.as_string().map(|s| s.to_string()) {
        Some(Ok(s)) => s,
        _ if v.is_null() || v.is_undefined() => "interrupted or out of memory".to_owned(),
        _ => format!("{v:?}").chars().take(200).collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    kind: JsKind,
    url: &str,
    code: &str,
    configuration: serde_json::Value,
    host: Box<dyn JsHost>,
    limits: JsLimits,
    (rx, own, stop): (Receiver<JsEvent>, JsEvents, Arc<AtomicBool>),
    ready: SyncSender<Result<(), JsError>>,
) {
    let engine = |e: rquickjs::Error| JsError::Engine(e.to_string());
    let rt = match Runtime::new().map_err(engine) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.set_memory_limit(limits.memory_bytes);
    rt.set_max_stack_size(limits.stack_bytes);
    let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
    {
        let deadline = deadline.clone();
        rt.set_interrupt_handler(Some(Box::new(move || {
            deadline.get().is_some_and(|d| Instant::now() > d)
        })));
    }
    let ctx = match Context::full(&rt).map_err(engine) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let host: Rc<dyn JsHost> = Rc::from(host);
    let timers = Rc::new(RefCell::new(Timers {
        next: 0,
        due: BTreeMap::new(),
        max: limits.max_timers,
    }));
    let budget = limits.cpu_per_call;
    let arm = |d: &Rc<Cell<Option<Instant>>>| d.set(Some(Instant::now() + budget));

    // install the prelude and run the code's top level
    arm(&deadline);
    let loaded = ctx.with(|ctx| -> Result<(), String> {
        let native = install_native(&ctx, kind, host.clone(), timers.clone(), own.clone())
            .map_err(|e| thrown(&ctx, e))?;
        let prelude: Function<'_> = ctx.eval(PRELUDE).map_err(|e| thrown(&ctx, e))?;
        let config = ctx
            .json_parse(configuration.to_string())
            .map_err(|e| thrown(&ctx, e))?;
        let kind_name = match kind {
            JsKind::Hyperty => "hyperty",
            JsKind::Stub => "protocolstub",
        };
        prelude
            .call::<_, ()>((ctx.globals(), native, kind_name, url, config))
            .map_err(|e| thrown(&ctx, e))?;
        ctx.eval::<(), _>(code).map_err(|e| thrown(&ctx, e))?;
        Ok(())
    });
    let loaded = loaded.and_then(|()| drain_jobs(&rt, &ctx));
    deadline.set(None);
    if let Err(reason) = loaded {
        warn!(%reason, "catalogue code failed while loading");
        let _ = ready.send(Err(JsError::Load(reason)));
        return;
    }
    let _ = ready.send(Ok(()));
    drop(own);
    info!("catalogue code running");

    while !stop.load(Ordering::Relaxed) {
        let next_timer = timers.borrow().due.keys().next().copied();
        let event = match next_timer {
            Some((at, _)) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(e) => Some(e),
                Err(_) => break,
            },
        };
        let (what, data) = match event {
            Some(JsEvent::Message(m)) => ("message", m),
            Some(JsEvent::Connect) => ("connect", String::new()),
            Some(JsEvent::Disconnect) => ("disconnect", String::new()),
            Some(JsEvent::WsOpen) => ("ws-open", String::new()),
            Some(JsEvent::WsMessage(m)) => ("ws-message", m),
            Some(JsEvent::WsClosed(why)) => ("ws-close", why),
            Some(JsEvent::Stop) => break,
            None => {
                let mut t = timers.borrow_mut();
                let Some(((_, id), ())) = t.due.pop_first() else {
                    continue;
                };
                ("timer", id.to_string())
            }
        };
        arm(&deadline);
        let r = ctx.with(|ctx| {
            let dispatch: Function<'_> = ctx
                .globals()
                .get("__dispatch")
                .map_err(|e| thrown(&ctx, e))?;
            dispatch
                .call::<_, ()>((what, data))
                .map_err(|e| thrown(&ctx, e))
        });
        let r = r.and_then(|()| drain_jobs(&rt, &ctx));
        deadline.set(None);
        if let Err(reason) = r {
            warn!(%reason, event = what, "catalogue code failed; sandbox stopped");
            host.failed(&reason);
            return;
        }
    }
    info!("sandbox stopped");
}

/// Runs queued promise jobs (still under the call's deadline).
fn drain_jobs(rt: &Runtime, ctx: &Context) -> Result<(), String> {
    loop {
        match rt.execute_pending_job() {
            Ok(true) => continue,
            Ok(false) => return Ok(()),
            Err(_) => {
                return Err(ctx.with(|ctx| thrown(&ctx, rquickjs::Error::Exception)));
            }
        }
    }
}

fn install_native<'js>(
    ctx: &Ctx<'js>,
    kind: JsKind,
    host: Rc<dyn JsHost>,
    timers: Rc<RefCell<Timers>>,
    own: JsEvents,
) -> rquickjs::Result<Object<'js>> {
    let native = Object::new(ctx.clone())?;
    let h = host.clone();
    native.set(
        "post",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, json: String| {
            let msg = Message::parse(&json)
                .map_err(|e| Exception::throw_message(&ctx, &format!("bad message: {e}")))?;
            h.post(msg).map_err(|e| Exception::throw_message(&ctx, &e))
        })?,
    )?;
    let t = timers.clone();
    native.set(
        "setTimer",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, ms: f64| {
            let mut t = t.borrow_mut();
            if t.due.len() >= t.max {
                return Err(Exception::throw_message(&ctx, "too many timers"));
            }
            t.next = t.next.wrapping_add(1);
            let id = t.next;
            let ms = ms.clamp(0.0, 86_400_000.0) as u64;
            t.due
                .insert((Instant::now() + Duration::from_millis(ms), id), ());
            Ok(id)
        })?,
    )?;
    native.set(
        "clearTimer",
        Function::new(ctx.clone(), move |id: f64| {
            timers
                .borrow_mut()
                .due
                .retain(|(_, i), _| f64::from(*i) != id);
        })?,
    )?;
    native.set(
        "log",
        Function::new(ctx.clone(), move |text: String| {
            info!(target: "jsbox", "{}", text.chars().take(1000).collect::<String>());
        })?,
    )?;
    if kind == JsKind::Stub {
        let h = host.clone();
        native.set(
            "status",
            Function::new(ctx.clone(), move |status: String, desc: Opt<String>| {
                let desc = desc.0.filter(|d| !d.is_empty());
                h.status(&status, desc.as_deref());
            })?,
        )?;
        let h = host.clone();
        native.set(
            "wsOpen",
            Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
                h.ws_open(own.clone())
                    .map_err(|e| Exception::throw_message(&ctx, &e))
            })?,
        )?;
        let h = host.clone();
        native.set(
            "wsSend",
            Function::new(ctx.clone(), move |ctx: Ctx<'js>, text: String| {
                h.ws_send(text)
                    .map_err(|e| Exception::throw_message(&ctx, &e))
            })?,
        )?;
        native.set(
            "wsClose",
            Function::new(ctx.clone(), move || host.ws_close())?,
        )?;
    }
    Ok(native)
}

#[cfg(test)]
mod tests;
