//! The QoS broker a messaging node hosts at `domain://qos.<D>`: the latest
//! connectivity report of each runtime.
//!
//! Runtimes' QoS user agents ([`hyperty_actors::qos`]) send their reports here
//! periodically. The [`QosBroker`] actor keeps the latest one per runtime and
//! serves them over HTTP.
//!
//! # Who sends it what
//!
//! | sender | message | reply |
//! |---|---|---|
//! | the node, for each reTHINK message whose `to` is `domain://qos.<D>`, with the session's runtime URL | [`QosRequest`] | the response [`Message`] |
//! | the session manager, as sessions come and go | [`Lifecycle`] | — |
//! | HTTP handlers, tests, operators | [`GetReports`], [`GetReport`] | typed results |
//!
//! # Wire form
//!
//! `update {value: {runtime, sentAt, stubs:[…]}}` (a
//! [`ConnectivityReport`]) → `{code:200}`. The report must be about the sender's
//! own runtime: `value.runtime` must be the runtime URL of the session it comes
//! from, else 403. A malformed report, or one with more than
//! [`max_stubs_per_report`](QosBrokerConfig::max_stubs_per_report) stubs, answers
//! 400; any other message type 400. Each answer carries a `description`.
//!
//! # Bounds and lifetime
//!
//! At most [`max_reports`](QosBrokerConfig::max_reports) runtimes are kept: a
//! report from one more evicts the runtime whose latest report is the oldest. When
//! a runtime's session is lost (its socket dropped, it may re-open) its report is
//! marked `stale`; when it re-opens the mark goes; when the session is closed for
//! good (`close`, end of the grace period, eviction, replacement) the report is
//! dropped.
//!
//! # HTTP
//!
//! [`configure`] mounts `GET /qos` (`{count, limit, reports:[StoredReport…]}`, by
//! runtime URL) and `GET /qos/{runtime}` (one [`StoredReport`], the runtime URL
//! percent-encoded; 404 if none). Who may read is decided as for the registry's
//! HTTP reads ([`HttpReads`](crate::domain_registry::HttpReads)): anyone with
//! `[qos] public_reads` or `auth.mode = "optional"`, else a valid ID or device
//! token in `Authorization: Bearer …` (401 otherwise).
//!
//! ```
//! use std::sync::Arc;
//! use hyperty::qos::{GetReports, QosBroker, QosBrokerConfig, QosRequest};
//! use hyperty::prelude::*;
//! use serde_json::json;
//!
//! # #[actix::main] async fn main() {
//! let broker = QosBroker::new("example.com", QosBrokerConfig::default()).start();
//! let runtime = "hyperty-runtime://example.com/rt-1";
//! let report = Message::new(
//!     MessageType::Update,
//!     format!("{runtime}/qos").parse().unwrap(),
//!     "domain://qos.example.com".parse::<Address>().unwrap(),
//! )
//! .with_id(1)
//! .with_value(json!({"runtime": runtime, "sentAt": 1, "stubs": []}));
//!
//! // from the runtime's own session: kept
//! let ok = broker
//!     .send(QosRequest { msg: report.clone(), runtime: Some(Arc::from(runtime)) })
//!     .await
//!     .unwrap();
//! assert_eq!(ok.code(), Some(ResponseCode::Ok));
//! // from another runtime's session: refused
//! let other = Some(Arc::from("hyperty-runtime://example.com/rt-2"));
//! let refused = broker.send(QosRequest { msg: report, runtime: other }).await.unwrap();
//! assert_eq!(refused.code(), Some(ResponseCode::Forbidden));
//!
//! let reports = broker.send(GetReports).await.unwrap();
//! assert_eq!(reports.count, 1);
//! assert_eq!(reports.reports[0].report.runtime.as_str(), runtime);
//! # }
//! ```

mod http;
mod table;

use std::sync::Arc;

use actix::prelude::{Actor, Context, Handler, MessageResult};
use hyperty_actors::clock::{Clock, SystemClock};
use hyperty_actors::error::{error_response, ToResponseCode};
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use hyperty_actors::qos::ConnectivityReport;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span};

use crate::node::sessions::Lifecycle;

pub use self::http::{configure, QosReads};
use self::table::ReportTable;
pub use self::table::StoredReport;

/// `[qos]`: limits of the node's QoS broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QosBrokerConfig {
    /// Most runtimes whose latest report is kept; one more evicts the runtime
    /// whose latest report is the oldest.
    pub max_reports: usize,
    /// Most stubs one report may list (more answers 400).
    pub max_stubs_per_report: usize,
    /// Lets anyone read the reports over HTTP (`GET /qos…`). When false (the
    /// default) and sessions must authenticate, a read needs a valid ID or device
    /// token (`Authorization: Bearer …`).
    pub public_reads: bool,
}

impl Default for QosBrokerConfig {
    fn default() -> Self {
        QosBrokerConfig {
            max_reports: 10_000,
            max_stubs_per_report: 64,
            public_reads: false,
        }
    }
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QosBrokerError {
    /// Malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Not the sender's to give (403).
    #[error("{0}")]
    Forbidden(String),
}

impl ToResponseCode for QosBrokerError {
    fn response_code(&self) -> ResponseCode {
        match self {
            QosBrokerError::BadRequest(_) => ResponseCode::BadRequest,
            QosBrokerError::Forbidden(_) => ResponseCode::Forbidden,
        }
    }
}

/// A reTHINK message addressed to `domain://qos.<D>`, with the runtime URL of the
/// session it comes from (as the node knows it, never as the message says).
/// Answered with the response message.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Message")]
pub struct QosRequest {
    /// The request.
    pub msg: Message,
    /// The sending session's runtime URL (`None`: no open session).
    pub runtime: Option<Arc<str>>,
}

/// Every kept report, by runtime URL.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "Reports")]
pub struct GetReports;

/// The answer to [`GetReports`] (and of `GET /qos`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reports {
    /// How many runtimes have a report.
    pub count: usize,
    /// The most kept ([`QosBrokerConfig::max_reports`]).
    pub limit: usize,
    /// The reports, by runtime URL.
    pub reports: Vec<StoredReport>,
}

/// The report of one runtime.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Option<StoredReport>")]
pub struct GetReport(pub String);

/// The QoS broker actor (see the module docs).
#[derive(Debug)]
pub struct QosBroker {
    config: QosBrokerConfig,
    table: ReportTable,
    clock: Arc<dyn Clock>,
    domain: String,
}

impl QosBroker {
    /// A broker for the node of `domain`.
    pub fn new(domain: &str, config: QosBrokerConfig) -> QosBroker {
        QosBroker {
            table: ReportTable::new(config.max_reports),
            config,
            clock: Arc::new(SystemClock),
            domain: domain.to_owned(),
        }
    }

    /// Reads "received at" from `clock` (tests use a manual one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> QosBroker {
        self.clock = clock;
        self
    }

    /// The broker's limits.
    pub fn config(&self) -> &QosBrokerConfig {
        &self.config
    }

    fn accept(&mut self, r: &QosRequest) -> Result<(), QosBrokerError> {
        let m = &r.msg;
        if m.kind != MessageType::Update {
            return Err(QosBrokerError::BadRequest(format!(
                "{} is not supported here: send reports as update (read them at GET /qos)",
                m.kind
            )));
        }
        let value = m.body.value.clone().ok_or_else(|| {
            QosBrokerError::BadRequest("update needs body.value: a connectivity report".into())
        })?;
        let report: ConnectivityReport = serde_json::from_value(value).map_err(|e| {
            QosBrokerError::BadRequest(format!("body.value is not a connectivity report: {e}"))
        })?;
        let Some(session) = r.runtime.as_deref() else {
            return Err(QosBrokerError::Forbidden(
                "open the session before reporting".into(),
            ));
        };
        if report.runtime.as_str() != session {
            return Err(QosBrokerError::Forbidden(format!(
                "the report is about {}: a session reports only about its own runtime {session}",
                report.runtime
            )));
        }
        if report.stubs.len() > self.config.max_stubs_per_report {
            return Err(QosBrokerError::BadRequest(format!(
                "{} stubs in one report, at most {}",
                report.stubs.len(),
                self.config.max_stubs_per_report
            )));
        }
        let evicted = self.table.put(StoredReport {
            report,
            received_at: self.clock.now_ms(),
            stale: false,
        });
        if let Some(e) = evicted {
            info!(runtime = %e, limit = self.config.max_reports, "QoS report table full, oldest report evicted");
        }
        Ok(())
    }
}

impl Actor for QosBroker {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        debug!(domain = %self.domain, "QoS broker started");
    }
}

impl Handler<QosRequest> for QosBroker {
    type Result = MessageResult<QosRequest>;
    fn handle(&mut self, r: QosRequest, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("qos.broker", id = r.msg.id, kind = %r.msg.kind, from = %r.msg.from)
            .entered();
        MessageResult(match self.accept(&r) {
            Ok(()) => r.msg.reply(ResponseCode::Ok),
            Err(e) => {
                debug!(error = %e, "QoS report refused");
                error_response(&r.msg, &e)
            }
        })
    }
}

impl Handler<Lifecycle> for QosBroker {
    type Result = ();
    /// Lost: the report goes stale; back: fresh; closed for good: dropped.
    fn handle(&mut self, l: Lifecycle, _: &mut Context<Self>) {
        match l.event {
            "close" => {
                if self.table.remove(&l.runtime) {
                    debug!(runtime = %l.runtime, "session closed, QoS report dropped");
                }
            }
            "lost" => {
                self.table.mark_stale(&l.runtime, true);
            }
            _ => {
                self.table.mark_stale(&l.runtime, false);
            }
        }
    }
}

impl Handler<GetReports> for QosBroker {
    type Result = MessageResult<GetReports>;
    fn handle(&mut self, _: GetReports, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Reports {
            count: self.table.len(),
            limit: self.config.max_reports,
            reports: self.table.all(),
        })
    }
}

impl Handler<GetReport> for QosBroker {
    type Result = Option<StoredReport>;
    fn handle(&mut self, g: GetReport, _: &mut Context<Self>) -> Option<StoredReport> {
        self.table.get(&g.0).cloned()
    }
}
