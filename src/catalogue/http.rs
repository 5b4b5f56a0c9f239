//! The catalogue's HTTP face: descriptors signed on each read by the node's
//! identity provider (so a key rotation is followed at once).

use std::sync::Arc;

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use hyperty_actors::catalogue::ObjectType;
use serde_json::json;

use super::Catalogue;
use crate::identity::{IdentityProvider, SignDescriptor};

/// Mounts the catalogue's routes. The caller registers
/// `web::Data<Arc<Catalogue>>` and `web::Data<Addr<IdentityProvider>>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/{kind}", web::get().to(list))
        .route("/.well-known/{kind}/{name}", web::get().to(descriptor))
        .route(
            "/.well-known/{kind}/{name}/sourcePackage",
            web::get().to(package),
        );
}

fn error(status: StatusCode, description: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({"code": status.as_u16(), "description": description}))
}

fn kind_of(segment: &str) -> Result<ObjectType, Box<HttpResponse>> {
    ObjectType::from_segment(segment).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            "no such catalogue object type (hyperty, protocolstub, dataschema, runtime)".into(),
        ))
    })
}

async fn list(path: web::Path<String>, catalogue: web::Data<Arc<Catalogue>>) -> HttpResponse {
    match kind_of(&path) {
        Ok(kind) => HttpResponse::Ok().json(catalogue.names(kind)),
        Err(r) => *r,
    }
}

async fn descriptor(
    path: web::Path<(String, String)>,
    catalogue: web::Data<Arc<Catalogue>>,
    idp: web::Data<Addr<IdentityProvider>>,
) -> HttpResponse {
    let (kind, name) = path.into_inner();
    let kind = match kind_of(&kind) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let _span = tracing::info_span!("catalogue.descriptor", %kind, %name).entered();
    let Some(entry) = catalogue.get(kind, &name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no {kind} {name:?} in this catalogue"),
        );
    };
    let signature = match idp.send(SignDescriptor(entry.descriptor.clone())).await {
        Ok(Ok(jws)) => jws,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "descriptor not signed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "descriptor not signed".into(),
            );
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity provider unavailable".into(),
            )
        }
    };
    let mut body = match serde_json::to_value(&entry.descriptor) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "descriptor not encoded".into(),
            )
        }
    };
    body.insert("signature".into(), serde_json::Value::String(signature));
    HttpResponse::Ok().json(body)
}

async fn package(
    path: web::Path<(String, String)>,
    catalogue: web::Data<Arc<Catalogue>>,
) -> HttpResponse {
    let (kind, name) = path.into_inner();
    let kind = match kind_of(&kind) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    match catalogue.get(kind, &name) {
        Some(e) => HttpResponse::Ok()
            .content_type(match kind {
                ObjectType::Dataschema => "application/schema+json",
                _ => "text/javascript; charset=utf-8",
            })
            .body(e.package.clone()),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no {kind} {name:?} in this catalogue"),
        ),
    }
}
