//! The QoS User Agent: connectivity statistics of a runtime's protocol stubs, on
//! request and periodically to a broker.
//!
//! The [`QosAgent`] actor listens at `<runtime>/qos`. It reads the statistics the
//! [`RuntimeRegistry`](crate::registry::RuntimeRegistry) holds for every stub
//! ([`ListStubStatistics`]; see [`connectivity`](crate::connectivity)) and
//!
//! * answers `getCurrentConnectivityStatistics` with a [`ConnectivityReport`];
//! * on `sendConnectivityStatisticsToBroker`, sends such a report at once and then
//!   every interval as `update {value:<report>}` from `<runtime>/qos` to the broker
//!   (by default `domain://qos.<domain>`, hosted by the messaging node), one
//!   report in flight at a time: a tick while the last report is unanswered is
//!   skipped.
//!
//! # Wire forms (to `<runtime>/qos`)
//!
//! | request | reply |
//! |---|---|
//! | `read {}` or `read`/`execute {method:"getCurrentConnectivityStatistics"}` | `200 {value: ConnectivityReport}` |
//! | `execute {method:"sendConnectivityStatisticsToBroker", params:{broker?, interval?, enabled?}}` | starts (or with `enabled:false` stops) the reports → `200 {value: ReportingState}` |
//!
//! `broker` is an address, `interval` milliseconds between
//! [`MIN_REPORT_INTERVAL`] and [`MAX_REPORT_INTERVAL`]; omitted ones keep their
//! current value (at first the [`QosConfig`]'s). A malformed request answers 400,
//! an unknown method 404, each with a `description`. Only the runtime's own
//! components and hyperties may ask (`from` under the runtime URL, or an address
//! with a listener on this bus); anyone else — e.g. another runtime through the
//! messaging node — gets 403.
//!
//! A [`ConnectivityReport`] is `{runtime, sentAt, stubs:[StubStatistics…]}`
//! (`sentAt` in ms since the Unix epoch).
//!
//! Typed callers send [`GetConnectivityStatistics`], [`StartReporting`],
//! [`StopReporting`] and [`GetReportingState`] to the actor; it answers them only
//! once its bus listener is in place, so a first typed answer also means
//! `<runtime>/qos` is reachable.
//!
//! ```
//! use std::sync::Arc;
//! use hyperty_actors::prelude::*;
//! use hyperty_actors::qos::{GetConnectivityStatistics, QosAgent, QosConfig};
//! use hyperty_actors::registry::{RegistryConfig, RuntimeRegistry};
//!
//! # #[actix::main] async fn main() {
//! let url = RuntimeUrl::generate("example.com").unwrap();
//! let stubs = Arc::new(hyperty_actors::routes::StubTable::default());
//! let bus = MessageBus::start(url.clone(), BusConfig::default(), stubs.clone());
//! let registry = RuntimeRegistry::new(bus.clone(), stubs, RegistryConfig::default(),
//!     SandboxConfig::default()).start();
//! let qos = QosAgent::new(bus.clone(), registry.recipient(), QosConfig::default()).start();
//!
//! // typed (answered once the agent listens on the bus)
//! let report = qos.send(GetConnectivityStatistics).await.unwrap().unwrap();
//! assert_eq!(report.runtime, *url.address());
//!
//! // or over the bus, as any hyperty would ask
//! let ask = Message::new(MessageType::Read, url.component("app"), url.component("qos"));
//! let resp = bus.post(ask).await.unwrap();
//! assert_eq!(resp.code(), Some(ResponseCode::Ok));
//! assert_eq!(resp.body.value.unwrap()["stubs"], serde_json::json!([]));
//! # }
//! ```

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{debug, info, info_span, warn};

use crate::address::Address;
use crate::bus::{Bus, Deliver};
use crate::clock::{Clock, SystemClock};
use crate::connectivity::StubStatistics;
use crate::error::{error_response, ToResponseCode};
use crate::message::{Message, MessageType, ResponseCode};
use crate::registry::ListStubStatistics;

/// Default time between two reports.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest report interval accepted.
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(50);
/// Longest report interval accepted.
pub const MAX_REPORT_INTERVAL: Duration = Duration::from_secs(86_400);

/// The method that answers the current statistics.
pub const GET_STATISTICS: &str = "getCurrentConnectivityStatistics";
/// The method that starts or stops the reports to the broker.
pub const SEND_TO_BROKER: &str = "sendConnectivityStatisticsToBroker";

/// Configuration of a runtime's QoS user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosConfig {
    /// Where reports go; `None`: `domain://qos.<the runtime's domain>`.
    pub broker: Option<Address>,
    /// Time between two reports.
    pub interval: Duration,
    /// Report from the start, without waiting for
    /// `sendConnectivityStatisticsToBroker`.
    pub report: bool,
}

impl Default for QosConfig {
    fn default() -> Self {
        QosConfig {
            broker: None,
            interval: DEFAULT_REPORT_INTERVAL,
            report: false,
        }
    }
}

/// Errors of the QoS user agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QosError {
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// The sender is not of this runtime (403).
    #[error("only this runtime's components and hyperties may ask its QoS agent, not {0}")]
    Forbidden(String),
    /// No such method (404).
    #[error("unknown method {0:?} (known: {GET_STATISTICS}, {SEND_TO_BROKER})")]
    UnknownMethod(String),
    /// A component the agent reads is gone (500).
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
}

impl ToResponseCode for QosError {
    fn response_code(&self) -> ResponseCode {
        match self {
            QosError::BadRequest(_) => ResponseCode::BadRequest,
            QosError::Forbidden(_) => ResponseCode::Forbidden,
            QosError::UnknownMethod(_) => ResponseCode::NotFound,
            QosError::Unavailable(_) => ResponseCode::InternalError,
        }
    }
}

/// The connectivity of one runtime: what the agent answers and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectivityReport {
    /// The runtime's URL.
    pub runtime: Address,
    /// When the report was made (ms since the Unix epoch).
    pub sent_at: u64,
    /// One entry per protocol stub.
    pub stubs: Vec<StubStatistics>,
}

/// Where the reports stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportingState {
    /// True while reports are sent.
    pub active: bool,
    /// Where they go.
    pub broker: Address,
    /// Time between two reports (ms).
    pub interval_ms: u64,
    /// Reports sent.
    pub sent: u64,
    /// Reports the broker answered 200.
    pub acknowledged: u64,
    /// Why the last unacknowledged report failed, if it did.
    pub last_error: Option<String>,
}

/// Answers the current statistics.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "Result<ConnectivityReport, QosError>")]
pub struct GetConnectivityStatistics;

/// Starts reporting (or changes the broker or interval of running reports); the
/// first report goes out at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, actix::Message)]
#[rtype(result = "Result<ReportingState, QosError>")]
pub struct StartReporting {
    /// The broker; `None`: keep the current one.
    pub broker: Option<Address>,
    /// The interval; `None`: keep the current one.
    pub interval: Option<Duration>,
}

/// Stops reporting.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "ReportingState")]
pub struct StopReporting;

/// Where the reports stand.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "ReportingState")]
pub struct GetReportingState;

/// A request to `<runtime>/qos`, parsed from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Get,
    Start(StartReporting),
    Stop,
}

fn bad(why: impl Into<String>) -> QosError {
    QosError::BadRequest(why.into())
}

impl Request {
    fn parse(m: &Message) -> Result<Request, QosError> {
        let method = match m.body.extra.get("method") {
            None if m.kind == MessageType::Read => GET_STATISTICS,
            None => return Err(bad("execute needs body.method")),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(bad("body.method must be a string")),
        };
        if !matches!(m.kind, MessageType::Read | MessageType::Execute) {
            return Err(bad(format!(
                "{} is not supported here (read or execute)",
                m.kind
            )));
        }
        let params = match m.body.extra.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) => return Err(bad("body.params must be an object")),
        };
        match method {
            GET_STATISTICS => Ok(Request::Get),
            SEND_TO_BROKER => Request::send_to_broker(params),
            other => Err(QosError::UnknownMethod(other.to_owned())),
        }
    }

    fn send_to_broker(params: Map<String, Value>) -> Result<Request, QosError> {
        let mut start = StartReporting::default();
        let mut enabled = true;
        for (k, v) in params {
            match (k.as_str(), v) {
                ("broker", Value::String(s)) => {
                    start.broker = Some(
                        Address::parse(&s)
                            .map_err(|e| bad(format!("params.broker is not an address: {e}")))?,
                    );
                }
                ("interval", Value::Number(n)) => {
                    let ms = n
                        .as_u64()
                        .ok_or_else(|| bad("params.interval must be whole milliseconds"))?;
                    start.interval = Some(Duration::from_millis(ms));
                }
                ("enabled", Value::Bool(b)) => enabled = b,
                ("broker" | "interval" | "enabled", _) => {
                    return Err(bad(format!(
                        "params.{k} must be {}",
                        match k.as_str() {
                            "broker" => "an address",
                            "interval" => "a number of milliseconds",
                            _ => "true or false",
                        }
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "unknown parameter params.{k} (broker, interval, enabled)"
                    )))
                }
            }
        }
        Ok(if enabled {
            Request::Start(start)
        } else {
            Request::Stop
        })
    }
}

/// The QoS user agent actor.
pub struct QosAgent {
    bus: Bus,
    url: Address,
    stubs: Recipient<ListStubStatistics>,
    clock: std::sync::Arc<dyn Clock>,
    broker: Address,
    interval: Duration,
    start_reporting: bool,
    timer: Option<SpawnHandle>,
    in_flight: bool,
    sent: u64,
    acknowledged: u64,
    last_error: Option<String>,
}

impl std::fmt::Debug for QosAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QosAgent")
            .field("url", &self.url)
            .field("broker", &self.broker)
            .field("active", &self.timer.is_some())
            .finish_non_exhaustive()
    }
}

impl QosAgent {
    /// An agent for the runtime of `bus`, reading the stubs' statistics from
    /// `stubs` (the runtime registry). Start it to have it listen at `<runtime>/qos`.
    pub fn new(bus: Bus, stubs: Recipient<ListStubStatistics>, config: QosConfig) -> QosAgent {
        let runtime = bus.runtime_url();
        let url = runtime.component("qos");
        let domain = runtime.domain().unwrap_or("localhost").to_owned();
        let broker = config.broker.clone().unwrap_or_else(|| {
            Address::parse(&format!("domain://qos.{domain}")).unwrap_or_else(|_| url.clone())
        });
        QosAgent {
            bus,
            url,
            stubs,
            clock: std::sync::Arc::new(SystemClock),
            broker,
            interval: config
                .interval
                .clamp(MIN_REPORT_INTERVAL, MAX_REPORT_INTERVAL),
            start_reporting: config.report,
            timer: None,
            in_flight: false,
            sent: 0,
            acknowledged: 0,
            last_error: None,
        }
    }

    /// Stamps reports (`sentAt`) with `clock`: the runtime's one clock.
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn Clock>) -> QosAgent {
        self.clock = clock;
        self
    }

    /// The agent's address, `<runtime>/qos`.
    pub fn url(&self) -> &Address {
        &self.url
    }

    fn state(&self) -> ReportingState {
        ReportingState {
            active: self.timer.is_some(),
            broker: self.broker.clone(),
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            sent: self.sent,
            acknowledged: self.acknowledged,
            last_error: self.last_error.clone(),
        }
    }

    fn report(&self) -> impl std::future::Future<Output = Result<ConnectivityReport, QosError>> {
        let list = self.stubs.send(ListStubStatistics);
        let runtime = self.bus.runtime_url().address().clone();
        let clock = self.clock.clone();
        async move {
            let stubs = list.await.map_err(|_| QosError::Unavailable("registry"))?;
            Ok(ConnectivityReport {
                runtime,
                sent_at: clock.now_ms(),
                stubs,
            })
        }
    }

    fn start(&mut self, s: StartReporting, ctx: &mut Context<Self>) -> Result<(), QosError> {
        if let Some(i) = s.interval {
            if !(MIN_REPORT_INTERVAL..=MAX_REPORT_INTERVAL).contains(&i) {
                return Err(bad(format!(
                    "params.interval must be between {} and {} ms",
                    MIN_REPORT_INTERVAL.as_millis(),
                    MAX_REPORT_INTERVAL.as_millis()
                )));
            }
            self.interval = i;
        }
        if let Some(b) = s.broker {
            self.broker = b;
        }
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        info!(broker = %self.broker, interval = ?self.interval, "connectivity reports started");
        self.tick(ctx);
        self.timer = Some(ctx.run_interval(self.interval, |act, ctx| act.tick(ctx)));
        Ok(())
    }

    fn stop(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
            info!(broker = %self.broker, "connectivity reports stopped");
        }
    }

    /// Sends one report, unless the last one is still unanswered.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            debug!(broker = %self.broker, "last report unanswered, skipping this one");
            return;
        }
        self.in_flight = true;
        let report = self.report();
        let (bus, from, to) = (self.bus.clone(), self.url.clone(), self.broker.clone());
        let sending = async move {
            let report = report.await.map_err(|e| e.to_string())?;
            let value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
            let msg = Message::new(MessageType::Update, from, to).with_value(value);
            let resp = bus.post(msg).await.map_err(|e| e.to_string())?;
            match resp.code() {
                Some(ResponseCode::Ok) => Ok(()),
                code => Err(format!(
                    "the broker answered {}: {}",
                    code.map_or(0, ResponseCode::as_u16),
                    resp.body.description_text().unwrap_or("no description")
                )),
            }
        };
        self.sent += 1;
        ctx.spawn(sending.into_actor(self).map(|result, act, _| {
            act.in_flight = false;
            match result {
                Ok(()) => {
                    act.acknowledged += 1;
                    act.last_error = None;
                }
                Err(e) => {
                    warn!(broker = %act.broker, error = %e, "connectivity report not accepted");
                    act.last_error = Some(e);
                }
            }
        }));
    }
}

impl Actor for QosAgent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listen = self
            .bus
            .add_listener(self.url.clone(), ctx.address().recipient(), None);
        // typed requests are answered once the agent can be reached on the bus
        ctx.wait(listen.into_actor(self).map(|r, act, _| {
            if let Err(e) = r {
                warn!(address = %act.url, error = %e, "QoS agent could not join the bus");
            }
        }));
        if self.start_reporting {
            let _ = self.start(StartReporting::default(), ctx);
        }
    }
}

impl Handler<Deliver> for QosAgent {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, ctx: &mut Context<Self>) {
        if !m.kind.expects_response() {
            return;
        }
        let _span = info_span!("qos.request", id = m.id, kind = %m.kind, from = %m.from).entered();
        let bus = self.bus.clone();
        let local = m.from.is_under(self.bus.runtime_url().as_str())
            || self.bus.has_listener(m.from.as_str());
        let request = if local {
            Request::parse(&m)
        } else {
            Err(QosError::Forbidden(m.from.to_string()))
        };
        match request {
            Ok(Request::Get) => {
                let report = self.report();
                actix::spawn(async move {
                    let reply = match report.await {
                        Ok(r) => match serde_json::to_value(&r) {
                            Ok(v) => m.reply_value(ResponseCode::Ok, v),
                            Err(e) => m.reply_error(ResponseCode::InternalError, e.to_string()),
                        },
                        Err(e) => error_response(&m, &e),
                    };
                    bus.send(reply);
                });
            }
            Ok(Request::Start(s)) => {
                let reply = match self.start(s, ctx) {
                    Ok(()) => state_reply(&m, &self.state()),
                    Err(e) => error_response(&m, &e),
                };
                bus.send(reply);
            }
            Ok(Request::Stop) => {
                self.stop(ctx);
                bus.send(state_reply(&m, &self.state()));
            }
            Err(e) => {
                debug!(error = %e, "QoS request refused");
                bus.send(error_response(&m, &e));
            }
        }
    }
}

fn state_reply(m: &Message, state: &ReportingState) -> Message {
    match serde_json::to_value(state) {
        Ok(v) => m.reply_value(ResponseCode::Ok, v),
        Err(e) => m.reply_error(ResponseCode::InternalError, e.to_string()),
    }
}

impl Handler<GetConnectivityStatistics> for QosAgent {
    type Result = ResponseFuture<Result<ConnectivityReport, QosError>>;
    fn handle(&mut self, _: GetConnectivityStatistics, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.report())
    }
}

impl Handler<StartReporting> for QosAgent {
    type Result = Result<ReportingState, QosError>;
    fn handle(&mut self, s: StartReporting, ctx: &mut Context<Self>) -> Self::Result {
        self.start(s, ctx)?;
        Ok(self.state())
    }
}

impl Handler<StopReporting> for QosAgent {
    type Result = MessageResult<StopReporting>;
    fn handle(&mut self, _: StopReporting, ctx: &mut Context<Self>) -> Self::Result {
        self.stop(ctx);
        MessageResult(self.state())
    }
}

impl Handler<GetReportingState> for QosAgent {
    type Result = MessageResult<GetReportingState>;
    fn handle(&mut self, _: GetReportingState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(kind: MessageType, body: Value) -> Message {
        let mut m = Message::new(
            kind,
            "hyperty://d.org/1".parse().unwrap(),
            "hyperty-runtime://d.org/rt/qos".parse::<Address>().unwrap(),
        );
        for (k, v) in body.as_object().cloned().unwrap_or_default() {
            m.body.extra.insert(k, v);
        }
        m
    }

    #[test]
    fn requests_parse_or_say_why_not() {
        assert_eq!(
            Request::parse(&msg(MessageType::Read, json!({}))),
            Ok(Request::Get)
        );
        assert_eq!(
            Request::parse(&msg(
                MessageType::Execute,
                json!({"method": GET_STATISTICS})
            )),
            Ok(Request::Get)
        );
        let start = Request::parse(&msg(
            MessageType::Execute,
            json!({"method": SEND_TO_BROKER, "params": {"broker": "domain://qos.d.org", "interval": 250}}),
        ));
        assert_eq!(
            start,
            Ok(Request::Start(StartReporting {
                broker: Some("domain://qos.d.org".parse().unwrap()),
                interval: Some(Duration::from_millis(250)),
            }))
        );
        assert_eq!(
            Request::parse(&msg(
                MessageType::Execute,
                json!({"method": SEND_TO_BROKER, "params": {"enabled": false}})
            )),
            Ok(Request::Stop)
        );
        let code = |body: Value, kind: MessageType| {
            Request::parse(&msg(kind, body))
                .unwrap_err()
                .response_code()
                .as_u16()
        };
        assert_eq!(code(json!({}), MessageType::Execute), 400);
        assert_eq!(code(json!({"method": 7}), MessageType::Execute), 400);
        assert_eq!(code(json!({"method": "nope"}), MessageType::Execute), 404);
        assert_eq!(
            code(json!({"method": GET_STATISTICS}), MessageType::Create),
            400
        );
        assert_eq!(
            code(
                json!({"method": SEND_TO_BROKER, "params": [1]}),
                MessageType::Execute
            ),
            400
        );
        assert_eq!(
            code(
                json!({"method": SEND_TO_BROKER, "params": {"broker": "not an address"}}),
                MessageType::Execute
            ),
            400
        );
        assert_eq!(
            code(
                json!({"method": SEND_TO_BROKER, "params": {"interval": -1}}),
                MessageType::Execute
            ),
            400
        );
        assert_eq!(
            code(
                json!({"method": SEND_TO_BROKER, "params": {"colour": "red"}}),
                MessageType::Execute
            ),
            400
        );
    }
}
