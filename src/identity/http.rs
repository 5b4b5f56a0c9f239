//! The identity provider over HTTP: JSON in, JSON out.

use actix::prelude::Addr;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use hyperty_actors::error::ToResponseCode;
use serde::Deserialize;
use serde_json::json;

use super::config::DEFAULT_ASSERTION_AUDIENCE;
use super::error::IdentityError;
use super::idp::{
    DeleteDevice, DeleteUser, DeviceToken, IdentityProvider, IssueAssertion, Login, PublishedJwks,
    RegisterDevice, RegisterUser,
};
use super::model::{Profile, Secret};

/// Largest JSON request body accepted, bytes.
pub const MAX_HTTP_BODY: usize = 16 * 1024;

/// Mounts the provider's routes. The caller registers the provider with
/// `app_data(web::Data::new(addr))` (a `web::Data<Addr<IdentityProvider>>`).
///
/// | route | body | answer |
/// |---|---|---|
/// | `GET /.well-known/jwks.json` | — | 200 `{keys:[{kty:"OKP",crv:"Ed25519",x,kid,alg:"EdDSA",use:"sig"}]}` |
/// | `POST /idp/users` | `{username, password, profile?:{cn,avatar,email,locale}}` | 201 `{userURL, username, profile}` |
/// | `POST /idp/login` | `{username, password, deviceToken?}` | 200 `{idToken, tokenType:"Bearer", expires, userURL}` |
/// | `POST /idp/devices` + `Authorization: Bearer <idToken>` | `{label?}` or empty | 201 `{device, secret, runtimeURL}`; the token's user owns the device |
/// | `POST /idp/devices/token` | `{device, secret}` | 200 `{deviceToken, tokenType:"Bearer", expires, runtimeURL}` |
/// | `POST /idp/assertions` + `Authorization: Bearer <idToken>` | `{hyperty, audience?}` | 200 `{assertion, idp, userProfile, hyperty, expires, identity}` |
/// | `DELETE /idp/users/{name}` + `Authorization: Bearer <idToken>` of that user or an admin | — | 200 `{userURL, devices}`; the user, their devices and all their tokens are revoked |
/// | `DELETE /idp/devices/{id}` + `Authorization: Bearer <idToken>` of its owner or an admin | — | 200 `{runtimeURL}`; the device's tokens are revoked |
///
/// Errors are `{"code":…, "description":…}` with the same HTTP status: 400
/// malformed input, 401 bad credentials or token (with `WWW-Authenticate:
/// Bearer`), 403 a valid token that may not do this, 404 unknown route under
/// `/idp` or unknown user/device, 409 existing user, 429 full table, too many
/// concurrent password checks, or too many failed logins (then with
/// `Retry-After: <seconds>`). Logins are throttled per account and per client
/// address (the TCP peer). `expires` values are seconds since the epoch.
///
/// ```
/// use actix_web::{web, App};
/// use hyperty::identity::{self, IdentityProvider, IdpConfig};
/// use hyperty::prelude::*;
///
/// # #[actix::main] async fn main() {
/// let idp = IdentityProvider::new("example.com", IdpConfig::default()).unwrap().start();
/// let _app = App::new()
///     .app_data(web::Data::new(idp))
///     .configure(identity::configure);
/// # }
/// ```
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/jwks.json", web::get().to(jwks))
        .service(
            web::scope("/idp")
                .app_data(
                    web::JsonConfig::default()
                        .limit(MAX_HTTP_BODY)
                        .error_handler(|err, _| {
                            let e = IdentityError::invalid(
                                "body",
                                "a JSON object of the documented shape",
                            );
                            actix_web::error::InternalError::from_response(err, error(&e)).into()
                        }),
                )
                .route("/users", web::post().to(register_user))
                .route("/login", web::post().to(login))
                .route("/devices", web::post().to(register_device))
                .route("/devices/token", web::post().to(device_token))
                .route("/devices/{id}", web::delete().to(delete_device))
                .route("/users/{name}", web::delete().to(delete_user))
                .route("/assertions", web::post().to(assertion))
                .default_service(web::to(not_found)),
        );
}

type Idp = web::Data<Addr<IdentityProvider>>;

fn error(err: &IdentityError) -> HttpResponse {
    let code = err.response_code().as_u16();
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::build(status);
    if code == 401 {
        resp.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
    }
    if let IdentityError::Throttled { retry_after_secs } = err {
        resp.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
    }
    resp.json(json!({ "code": code, "description": err.to_string() }))
}

fn answer<T>(
    result: Result<Result<T, IdentityError>, actix::MailboxError>,
    status: StatusCode,
    body: impl FnOnce(T) -> serde_json::Value,
) -> HttpResponse {
    match result.map_err(IdentityError::from).and_then(|r| r) {
        Ok(v) => HttpResponse::build(status).json(body(v)),
        Err(e) => error(&e),
    }
}

async fn not_found() -> HttpResponse {
    error(&IdentityError::NotFound(
        "no such identity provider route".to_owned(),
    ))
}

async fn jwks(idp: Idp) -> HttpResponse {
    match idp.send(PublishedJwks).await {
        Ok((set, max_age)) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, format!("public, max-age={max_age}")))
            .json(set),
        Err(e) => error(&e.into()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewUser {
    username: String,
    password: Secret,
    #[serde(default)]
    profile: Profile,
}

async fn register_user(idp: Idp, body: web::Json<NewUser>) -> HttpResponse {
    let b = body.into_inner();
    let sent = idp
        .send(RegisterUser {
            username: b.username,
            password: b.password,
            profile: b.profile,
        })
        .await;
    answer(sent, StatusCode::CREATED, |u| {
        serde_json::to_value(u).unwrap_or_default()
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Credentials {
    username: String,
    password: Secret,
    #[serde(default)]
    device_token: Option<Secret>,
}

async fn login(idp: Idp, req: HttpRequest, body: web::Json<Credentials>) -> HttpResponse {
    let b = body.into_inner();
    let sent = idp
        .send(Login {
            username: b.username,
            password: b.password,
            device: b.device_token,
            source: req.peer_addr().map(|a| a.ip()),
        })
        .await;
    answer(sent, StatusCode::OK, |t| {
        json!({
            "idToken": t.token.expose(),
            "tokenType": "Bearer",
            "expires": t.claims.exp,
            "userURL": t.claims.sub,
        })
    })
}

#[derive(Deserialize)]
struct NewDevice {
    #[serde(default)]
    label: Option<String>,
}

/// `POST /idp/devices` takes an empty body or `{label?}`, and the owner's ID token.
async fn register_device(idp: Idp, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let id_token = match bearer(&req) {
        Ok(t) => t,
        Err(e) => return error(&e),
    };
    if body.len() > MAX_HTTP_BODY {
        return error(&IdentityError::invalid("body", "at most 16 KiB"));
    }
    let label = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<NewDevice>(&body) {
            Ok(d) => d.label,
            Err(_) => return error(&IdentityError::invalid("body", "{label?}")),
        }
    };
    let sent = idp.send(RegisterDevice { label, id_token }).await;
    answer(sent, StatusCode::CREATED, |d| {
        json!({
            "device": d.device,
            "secret": d.secret.expose(),
            "runtimeURL": d.runtime,
        })
    })
}

#[derive(Deserialize)]
struct DeviceSecret {
    device: String,
    secret: Secret,
}

async fn device_token(idp: Idp, body: web::Json<DeviceSecret>) -> HttpResponse {
    let b = body.into_inner();
    let sent = idp
        .send(DeviceToken {
            device: b.device,
            secret: b.secret,
        })
        .await;
    answer(sent, StatusCode::OK, |t| {
        json!({
            "deviceToken": t.token.expose(),
            "tokenType": "Bearer",
            "expires": t.claims.exp,
            "runtimeURL": t.claims.sub,
        })
    })
}

async fn delete_user(idp: Idp, req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    let id_token = match bearer(&req) {
        Ok(t) => t,
        Err(e) => return error(&e),
    };
    let sent = idp
        .send(DeleteUser {
            username: name.into_inner(),
            id_token,
        })
        .await;
    answer(
        sent,
        StatusCode::OK,
        |d| json!({"userURL": d.subject, "devices": d.devices}),
    )
}

async fn delete_device(idp: Idp, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let id_token = match bearer(&req) {
        Ok(t) => t,
        Err(e) => return error(&e),
    };
    let sent = idp
        .send(DeleteDevice {
            device: id.into_inner(),
            id_token,
        })
        .await;
    answer(sent, StatusCode::OK, |d| json!({"runtimeURL": d.subject}))
}

#[derive(Deserialize)]
struct AssertionRequest {
    hyperty: String,
    #[serde(default)]
    audience: Option<String>,
}

/// The bearer token of `Authorization: Bearer <token>`.
fn bearer(req: &HttpRequest) -> Result<Secret, IdentityError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(IdentityError::InvalidToken("missing bearer token"))?
        .to_str()
        .map_err(|_| IdentityError::InvalidToken("malformed Authorization header"))?;
    let (scheme, token) = value.split_once(' ').ok_or(IdentityError::InvalidToken(
        "malformed Authorization header",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(IdentityError::InvalidToken("missing bearer token"));
    }
    Ok(Secret::new(token.trim()))
}

async fn assertion(idp: Idp, req: HttpRequest, body: web::Json<AssertionRequest>) -> HttpResponse {
    let id_token = match bearer(&req) {
        Ok(t) => t,
        Err(e) => return error(&e),
    };
    let b = body.into_inner();
    let Ok(hyperty) = b.hyperty.parse() else {
        return error(&IdentityError::invalid("hyperty", "a hyperty URL"));
    };
    let sent = idp
        .send(IssueAssertion {
            id_token,
            hyperty,
            audience: b
                .audience
                .unwrap_or_else(|| DEFAULT_ASSERTION_AUDIENCE.to_owned()),
        })
        .await;
    answer(sent, StatusCode::OK, |a| {
        json!({
            "assertion": a.assertion,
            "idp": a.idp,
            "userProfile": a.user_profile,
            "hyperty": a.hyperty,
            "expires": a.expires,
            "identity": a.to_identity(),
        })
    })
}
