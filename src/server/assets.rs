//! The JavaScript client library, served at `GET /client/hyperty.js`.
//!
//! `web/client/hyperty.js` is embedded in the binary: an ES module without
//! dependencies that a page imports straight from its node
//! (`import { connect } from "http://HOST:PORT/client/hyperty.js"`). It is served
//! as `text/javascript` with a strong ETag (a hash of its text) and a short public
//! cache lifetime; `If-None-Match` with that ETag gets `304 Not Modified`.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// The library's text.
pub const HYPERTY_JS: &str = include_str!("../../web/client/hyperty.js");

/// Where it is served.
pub const PATH: &str = "/client/hyperty.js";

fn etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| {
        let digest = Sha256::digest(HYPERTY_JS.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    })
}

/// Mounts `GET /client/hyperty.js`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(PATH, web::get().to(serve));
}

async fn serve(req: HttpRequest) -> HttpResponse {
    let tag = etag();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut resp = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
    match fresh {
        true => resp.finish(),
        false => resp
            .content_type("text/javascript; charset=utf-8")
            .body(HYPERTY_JS),
    }
}
