//! Read-only HTTP access to the registry: `GET /registry/...`, JSON, for the
//! readers an [`HttpReads`] lets in.

use std::future::{ready, Ready};

use actix::prelude::Addr;
use actix_web::dev::Payload;
use actix_web::error::InternalError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use hyperty_actors::error::ToResponseCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::DomainRegistryError;
use super::model::{Availability, Record};
use super::request::Criteria;
use super::{
    DomainRegistry, GetByEmail, GetByGuid, GetByUrl, GetDataObjectsByName,
    GetDataObjectsByReporter, GetStats, GetUserHyperties,
};
use crate::identity::TokenVerifier;

/// Who may read the registry over HTTP. Register one next to [`configure`] with
/// `app_data(web::Data::new(HttpReads::…))`; without one, every read answers 401.
#[derive(Debug, Clone)]
pub enum HttpReads {
    /// Anyone (`[registry] public_reads = true`, or a node with `auth.mode = "optional"`).
    Public,
    /// Requests with `Authorization: Bearer <token>`, the token a valid ID or
    /// device token of this verifier's provider (the node's, when `auth.mode = "required"`).
    Token(TokenVerifier),
}

impl HttpReads {
    /// Why `req` may not read (the description of the 401), if it may not.
    fn refusal(&self, req: &HttpRequest) -> Option<String> {
        let verifier = match self {
            HttpReads::Public => return None,
            HttpReads::Token(verifier) => verifier,
        };
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
            .map(|(_, t)| t.trim());
        match bearer {
            None => Some("this read needs Authorization: Bearer <ID or device token>".to_owned()),
            Some(t) => verifier
                .verify_token(t)
                .err()
                .map(|e| format!("bearer token refused: {e}")),
        }
    }

    /// Lets `req` in, or answers it 401 `{code, description}` with
    /// `WWW-Authenticate: Bearer`. `reads` is `None` where no reader is admitted.
    pub(crate) fn admit(
        reads: Option<&HttpReads>,
        req: &HttpRequest,
    ) -> Result<(), actix_web::Error> {
        let why = match reads {
            Some(r) => r.refusal(req),
            None => Some("these reads are not open to anyone here".to_owned()),
        };
        match why {
            None => Ok(()),
            Some(why) => {
                tracing::debug!(path = %req.path(), why = %why, "HTTP read refused");
                let resp = HttpResponse::Unauthorized()
                    .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                    .json(json!({"code": 401, "description": why}));
                Err(InternalError::from_response(why, resp).into())
            }
        }
    }
}

/// Extracted by every read handler: present only if [`HttpReads`] lets the
/// request in, else the request is answered 401 `{code, description}`.
struct Reader;

impl FromRequest for Reader {
    type Error = actix_web::Error;
    type Future = Ready<Result<Reader, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let reads = req.app_data::<web::Data<HttpReads>>().map(|d| d.get_ref());
        ready(HttpReads::admit(reads, req).map(|()| Reader))
    }
}

/// Mounts the registry's read routes. The caller registers the registry with
/// `app_data(web::Data::new(addr))` (a `web::Data<Addr<DomainRegistry>>`) and
/// who may read with a `web::Data<`[`HttpReads`]`>`.
///
/// | route | answer |
/// |---|---|
/// | `GET /registry` | [`RegistryStats`](super::RegistryStats) |
/// | `GET /registry/hyperty/user/{user}[?resources=a,b&dataSchemes=x]` | `{<url>: HypertyInstance, …}` |
/// | `GET /registry/hyperty/email/{email}[?resources=…&dataSchemes=…]` | the same, for `user://<domain>/<local>` |
/// | `GET /registry/hyperty/guid/{guid}` | the same, by `guid` |
/// | `GET /registry/hyperty/url/{url}` | one `HypertyInstance` |
/// | `GET /registry/dataobject/url/{url}` | one data object |
/// | `GET /registry/dataobject/name/{name}` | `{<url>: data object, …}` |
/// | `GET /registry/dataobject/reporter/{reporter}` | `{<url>: data object, …}` |
///
/// Path keys are percent-encoded (`encodeURIComponent`), as in the reference
/// registry's REST calls. Nothing found answers HTTP 404
/// `{"code":404,"description":"Not Found"}`; matches that are all disconnected
/// answer 408 `{"code":408,"description":"Temporarily Unavailable","value":…}`.
/// A reader [`HttpReads`] does not let in gets 401 `{"code":401,"description":…}`
/// with `WWW-Authenticate: Bearer`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/registry")
            .route("", web::get().to(stats))
            .route("/hyperty/user/{user:.*}", web::get().to(by_user))
            .route("/hyperty/email/{email:.*}", web::get().to(by_email))
            .route("/hyperty/guid/{guid:.*}", web::get().to(by_guid))
            .route("/hyperty/url/{url:.*}", web::get().to(hyperty_by_url))
            .route(
                "/dataobject/url/{url:.*}",
                web::get().to(data_object_by_url),
            )
            .route("/dataobject/name/{name:.*}", web::get().to(by_name))
            .route(
                "/dataobject/reporter/{reporter:.*}",
                web::get().to(by_reporter),
            ),
    );
}

type Registry = web::Data<Addr<DomainRegistry>>;

/// `?resources=a,b&dataSchemes=x`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CriteriaParams {
    resources: Option<String>,
    data_schemes: Option<String>,
}

impl From<CriteriaParams> for Criteria {
    fn from(p: CriteriaParams) -> Criteria {
        let split = |s: Option<String>| {
            s.map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
        };
        Criteria {
            resources: split(p.resources),
            data_schemes: split(p.data_schemes),
        }
    }
}

fn status_of(err: &DomainRegistryError) -> StatusCode {
    StatusCode::from_u16(err.response_code().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn error(err: &DomainRegistryError) -> HttpResponse {
    HttpResponse::build(status_of(err)).json(json!({
        "code": err.response_code().as_u16(),
        "description": err.to_string(),
    }))
}

/// 200 with the value, 408 when every match is disconnected, or the error.
fn answer<T: Serialize + Availability>(
    result: Result<Result<T, DomainRegistryError>, actix::MailboxError>,
) -> HttpResponse {
    match result.map_err(DomainRegistryError::from).and_then(|r| r) {
        Ok(v) if v.all_disconnected() => {
            let err = DomainRegistryError::TemporarilyUnavailable;
            HttpResponse::build(status_of(&err)).json(json!({
                "code": err.response_code().as_u16(),
                "description": err.to_string(),
                "value": v,
            }))
        }
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error(&e),
    }
}

async fn stats(_: Reader, registry: Registry) -> HttpResponse {
    match registry.send(GetStats).await {
        Ok(s) => HttpResponse::Ok().json(s),
        Err(e) => error(&e.into()),
    }
}

async fn by_user(
    _: Reader,
    registry: Registry,
    user: web::Path<String>,
    params: web::Query<CriteriaParams>,
) -> HttpResponse {
    answer(
        registry
            .send(GetUserHyperties {
                user: user.into_inner(),
                criteria: params.into_inner().into(),
            })
            .await,
    )
}

async fn by_email(
    _: Reader,
    registry: Registry,
    email: web::Path<String>,
    params: web::Query<CriteriaParams>,
) -> HttpResponse {
    answer(
        registry
            .send(GetByEmail {
                email: email.into_inner(),
                criteria: params.into_inner().into(),
            })
            .await,
    )
}

async fn by_guid(_: Reader, registry: Registry, guid: web::Path<String>) -> HttpResponse {
    answer(
        registry
            .send(GetByGuid {
                guid: guid.into_inner(),
            })
            .await,
    )
}

async fn hyperty_by_url(_: Reader, registry: Registry, url: web::Path<String>) -> HttpResponse {
    let found = registry.send(GetByUrl {
        url: url.into_inner(),
    });
    answer(found.await.map(|r| match r {
        Ok(Record::Hyperty(h)) => Ok(h),
        Ok(Record::DataObject(_)) => Err(DomainRegistryError::NotFound),
        Err(e) => Err(e),
    }))
}

async fn data_object_by_url(_: Reader, registry: Registry, url: web::Path<String>) -> HttpResponse {
    let found = registry.send(GetByUrl {
        url: url.into_inner(),
    });
    answer(found.await.map(|r| match r {
        Ok(Record::DataObject(d)) => Ok(d),
        Ok(Record::Hyperty(_)) => Err(DomainRegistryError::NotFound),
        Err(e) => Err(e),
    }))
}

async fn by_name(_: Reader, registry: Registry, name: web::Path<String>) -> HttpResponse {
    answer(
        registry
            .send(GetDataObjectsByName {
                name: name.into_inner(),
            })
            .await,
    )
}

async fn by_reporter(_: Reader, registry: Registry, reporter: web::Path<String>) -> HttpResponse {
    answer(
        registry
            .send(GetDataObjectsByReporter {
                reporter: reporter.into_inner(),
            })
            .await,
    )
}
