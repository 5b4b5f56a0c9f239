//! Read-only HTTP access to the QoS broker: `GET /qos`, `GET /qos/{runtime}`.

use std::future::{ready, Ready};

use actix::prelude::Addr;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde_json::json;

use super::{GetReport, GetReports, QosBroker};
use crate::domain_registry::HttpReads;

/// Who may read the QoS reports over HTTP (the same rules as the registry's
/// [`HttpReads`], under their own switch `[qos] public_reads`). Register one next
/// to [`configure`] with `app_data(web::Data::new(QosReads(…)))`; without one,
/// every read answers 401.
#[derive(Debug, Clone)]
pub struct QosReads(pub HttpReads);

/// Present only if [`QosReads`] lets the request in.
struct Reader;

impl FromRequest for Reader {
    type Error = actix_web::Error;
    type Future = Ready<Result<Reader, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let reads = req
            .app_data::<web::Data<QosReads>>()
            .map(|d| &d.get_ref().0);
        ready(HttpReads::admit(reads, req).map(|()| Reader))
    }
}

/// Mounts the broker's read routes. The caller registers the broker with
/// `app_data(web::Data::new(addr))` (a `web::Data<Addr<QosBroker>>`) and who may
/// read with a `web::Data<`[`QosReads`]`>`.
///
/// | route | answer |
/// |---|---|
/// | `GET /qos` | [`Reports`](super::Reports): `{count, limit, reports:[…]}` |
/// | `GET /qos/{runtime}` | one [`StoredReport`](super::StoredReport) (`runtime` percent-encoded), or 404 `{code, description}` |
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/qos", web::get().to(all))
        .route("/qos/{runtime:.*}", web::get().to(one));
}

type Broker = web::Data<Addr<QosBroker>>;

fn unavailable() -> HttpResponse {
    HttpResponse::InternalServerError()
        .json(json!({"code": 500, "description": "the QoS broker is unavailable"}))
}

async fn all(_: Reader, broker: Broker) -> HttpResponse {
    match broker.send(GetReports).await {
        Ok(r) => HttpResponse::Ok().json(r),
        Err(_) => unavailable(),
    }
}

async fn one(_: Reader, broker: Broker, runtime: web::Path<String>) -> HttpResponse {
    let runtime = runtime.into_inner();
    match broker.send(GetReport(runtime.clone())).await {
        Ok(Some(r)) => HttpResponse::Ok().json(r),
        Ok(None) => HttpResponse::NotFound()
            .json(json!({"code": 404, "description": format!("no report from {runtime}")})),
        Err(_) => unavailable(),
    }
}
