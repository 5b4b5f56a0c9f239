//! The dashboard's HTTP face: the page (`GET /dashboard`, its script and style,
//! embedded from `web/dashboard/`) and its data (`GET /dashboard/data`, JSON; see
//! the [module docs](super) for the form and who may read it).

use actix::Addr;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{GetHistory, Sampler, BACKLOG_ROWS};
use crate::domain_registry::HttpReads;
use crate::federation::LinkState;
use crate::node::NodeState;

/// The page.
pub const INDEX_HTML: &str = include_str!("../../web/dashboard/index.html");
/// The page's script (draws the charts).
pub const DASHBOARD_JS: &str = include_str!("../../web/dashboard/dashboard.js");
/// The page's style.
pub const DASHBOARD_CSS: &str = include_str!("../../web/dashboard/dashboard.css");

/// Where the page is served.
pub const PATH: &str = "/dashboard";
/// Where its data is served.
pub const DATA_PATH: &str = "/dashboard/data";

/// The page may load its own script, style and data, and nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Who may read `/dashboard/data`: `web::Data<DashboardReads>` next to the route.
#[derive(Debug, Clone)]
pub(crate) struct DashboardReads(pub(crate) HttpReads);

/// The dashboard's routes with what they need; mounted by
/// [`NodeState::configure`](crate::node::NodeState::configure) when
/// `[dashboard] enabled`.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    sampler: web::Data<Addr<Sampler>>,
    reads: web::Data<DashboardReads>,
}

impl Routes {
    pub(crate) fn new(sampler: Addr<Sampler>, reads: HttpReads) -> Routes {
        Routes {
            sampler: web::Data::new(sampler),
            reads: web::Data::new(DashboardReads(reads)),
        }
    }

    /// Mounts `GET /dashboard`, `/dashboard/dashboard.js`,
    /// `/dashboard/dashboard.css` and `/dashboard/data`.
    pub(crate) fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.sampler.clone())
            .app_data(self.reads.clone())
            .route(PATH, web::get().to(page))
            .route("/dashboard/", web::get().to(page))
            .route("/dashboard/dashboard.js", web::get().to(script))
            .route("/dashboard/dashboard.css", web::get().to(style))
            .route(DATA_PATH, web::get().to(data));
    }
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    since: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Backlog {
    runtime: Option<String>,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct Peer {
    domain: String,
    state: LinkState,
    queued: usize,
    opened: u64,
}

/// `GET /dashboard/data[?since=<ms>]`.
async fn data(
    req: HttpRequest,
    node: web::Data<NodeState>,
    sampler: web::Data<Addr<Sampler>>,
    reads: Option<web::Data<DashboardReads>>,
) -> actix_web::Result<HttpResponse> {
    HttpReads::admit(reads.as_deref().map(|r| &r.0), &req)?;
    let query = match web::Query::<Query>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => {
            return Ok(HttpResponse::BadRequest()
                .json(json!({"code": 400, "description": format!("bad query: {e}")})))
        }
    };
    let view = sampler
        .send(GetHistory { since: query.since })
        .await
        .map_err(|_| {
            actix_web::error::ErrorServiceUnavailable("the dashboard's sampler has stopped")
        })?;
    let r = &node.router;
    let s = r.snapshot();
    let m = r.metrics.totals();
    let mut backlog: Vec<Backlog> = r
        .slots
        .iter()
        .filter_map(|slot| {
            let bytes = slot.queue.as_ref()?.pending() as u64;
            (slot.conn.is_some() && bytes > 0).then(|| Backlog {
                runtime: slot.runtime.as_deref().map(str::to_owned),
                bytes,
            })
        })
        .collect();
    backlog.sort_unstable_by_key(|b| std::cmp::Reverse(b.bytes));
    backlog.truncate(BACKLOG_ROWS);
    let peers = node.federation.as_ref().map(|f| {
        f.links()
            .into_iter()
            .map(|(domain, i)| Peer {
                domain,
                state: i.state,
                queued: i.queued,
                opened: i.opened,
            })
            .collect::<Vec<_>>()
    });
    let (frames_out, errors) = super::out_and_errors(&s, &m, r.metrics.enabled());
    let mut body = json!({
        "domain": r.domain(),
        "now": node.clock.now_ms(),
        "interval_ms": view.interval_ms,
        "capacity": view.capacity,
        "taken": view.taken,
        "samples": view.samples,
        "totals": {
            "frames_in": s.frames_in,
            "frames_out": frames_out,
            "delivered": s.delivered,
            "dropped": s.dropped,
            "errors": errors,
            "rate_limited": s.rate_limited,
            "slow_consumers": s.slow_consumers,
            "throttled": s.throttled,
            "abusive": s.abusive,
            "opened": s.opened,
            "reopened": s.reopened,
        },
        "backlog": backlog,
    });
    if let Some(p) = peers {
        body["peers"] = json!(p);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}
