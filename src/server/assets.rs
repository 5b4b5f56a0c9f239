//! The files the node ships for browsers, embedded in the binary: the JavaScript
//! client library and the demo page.
//!
//! | route | file | type | cache |
//! |---|---|---|---|
//! | `GET /` | `web/demo/index.html` | `text/html` | `no-cache` (revalidated with the ETag) |
//! | `GET /demo/demo.js` | `web/demo/demo.js` | `text/javascript` | `public, max-age=300` |
//! | `GET /demo/demo.css` | `web/demo/demo.css` | `text/css` | `public, max-age=300` |
//! | `GET /client/hyperty.js` | `web/client/hyperty.js` | `text/javascript` | `public, max-age=300` |
//!
//! `web/client/hyperty.js` is an ES module without dependencies that a page
//! imports straight from its node
//! (`import { connect } from "http://HOST:PORT/client/hyperty.js"`); it may be
//! loaded from any origin. The demo's files are for the node's own origin: they
//! carry a `Content-Security-Policy` that lets the page load scripts, styles and
//! connections only from the node, so nothing a user types can run as script.
//!
//! Every file has a strong ETag (a hash of its bytes, computed once);
//! `If-None-Match` with it gets `304 Not Modified`.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// The client library's text.
pub const HYPERTY_JS: &str = include_str!("../../web/client/hyperty.js");

/// Where the client library is served.
pub const CLIENT_PATH: &str = "/client/hyperty.js";

/// What the demo's files may load: only the node's own origin (and media
/// streams, which are not fetched).
const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Who may load a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Any origin (`Access-Control-Allow-Origin: *`).
    AnyOrigin,
    /// The node's own pages (the demo's `Content-Security-Policy`).
    Demo,
}

/// One embedded file.
#[derive(Debug)]
struct Asset {
    path: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    audience: Audience,
    body: &'static str,
}

const ASSETS: [Asset; 4] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        cache_control: "no-cache",
        audience: Audience::Demo,
        body: include_str!("../../web/demo/index.html"),
    },
    Asset {
        path: "/demo/demo.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: "public, max-age=300",
        audience: Audience::Demo,
        body: include_str!("../../web/demo/demo.js"),
    },
    Asset {
        path: "/demo/demo.css",
        content_type: "text/css; charset=utf-8",
        cache_control: "public, max-age=300",
        audience: Audience::Demo,
        body: include_str!("../../web/demo/demo.css"),
    },
    Asset {
        path: CLIENT_PATH,
        content_type: "text/javascript; charset=utf-8",
        cache_control: "public, max-age=300",
        audience: Audience::AnyOrigin,
        body: HYPERTY_JS,
    },
];

/// The ETags of [`ASSETS`], in the same order.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body.as_bytes());
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Mounts a `GET` route for every embedded file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (i, a) in ASSETS.iter().enumerate() {
        cfg.route(a.path, web::get().to(move |req: HttpRequest| serve(i, req)));
    }
}

async fn serve(i: usize, req: HttpRequest) -> HttpResponse {
    let (a, tag) = (&ASSETS[i], etags()[i].as_str());
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
        .insert_header((header::CACHE_CONTROL, a.cache_control))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    match a.audience {
        Audience::AnyOrigin => resp.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")),
        Audience::Demo => resp
            .insert_header((header::CONTENT_SECURITY_POLICY, DEMO_CSP))
            .insert_header((header::REFERRER_POLICY, "no-referrer")),
    };
    match fresh {
        true => resp.finish(),
        false => resp.content_type(a.content_type).body(a.body),
    }
}
