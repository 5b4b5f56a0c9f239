//! Read-only HTTP access to the registry: `GET /registry/...`, JSON.

use actix::prelude::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
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

/// Mounts the registry's read routes. The caller registers the registry with
/// `app_data(web::Data::new(addr))` (a `web::Data<Addr<DomainRegistry>>`).
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

async fn stats(registry: Registry) -> HttpResponse {
    match registry.send(GetStats).await {
        Ok(s) => HttpResponse::Ok().json(s),
        Err(e) => error(&e.into()),
    }
}

async fn by_user(
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

async fn by_guid(registry: Registry, guid: web::Path<String>) -> HttpResponse {
    answer(
        registry
            .send(GetByGuid {
                guid: guid.into_inner(),
            })
            .await,
    )
}

async fn hyperty_by_url(registry: Registry, url: web::Path<String>) -> HttpResponse {
    let found = registry.send(GetByUrl {
        url: url.into_inner(),
    });
    answer(found.await.map(|r| match r {
        Ok(Record::Hyperty(h)) => Ok(h),
        Ok(Record::DataObject(_)) => Err(DomainRegistryError::NotFound),
        Err(e) => Err(e),
    }))
}

async fn data_object_by_url(registry: Registry, url: web::Path<String>) -> HttpResponse {
    let found = registry.send(GetByUrl {
        url: url.into_inner(),
    });
    answer(found.await.map(|r| match r {
        Ok(Record::DataObject(d)) => Ok(d),
        Ok(Record::Hyperty(_)) => Err(DomainRegistryError::NotFound),
        Err(e) => Err(e),
    }))
}

async fn by_name(registry: Registry, name: web::Path<String>) -> HttpResponse {
    answer(
        registry
            .send(GetDataObjectsByName {
                name: name.into_inner(),
            })
            .await,
    )
}

async fn by_reporter(registry: Registry, reporter: web::Path<String>) -> HttpResponse {
    answer(
        registry
            .send(GetDataObjectsByReporter {
                reporter: reporter.into_inner(),
            })
            .await,
    )
}
