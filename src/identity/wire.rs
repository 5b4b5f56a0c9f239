//! reTHINK messages to `domain-idp://<D>`: `execute {method, params}` mapped onto
//! the provider's typed messages.

use std::net::IpAddr;

use actix::prelude::{ActorFutureExt, ResponseActFuture};
use hyperty_actors::error::error_response;
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::debug;

use super::config::DEFAULT_ASSERTION_AUDIENCE;
use super::error::IdentityError;
use super::idp::{
    DeleteDevice, DeleteUser, DeviceToken, IdentityProvider, IssueAssertion, Login, Op,
    RegisterDevice, RegisterUser,
};
use super::model::{Profile, Secret};

type Reply = ResponseActFuture<IdentityProvider, Message>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginParams {
    username: String,
    password: Secret,
    #[serde(default)]
    device_token: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterParams {
    username: String,
    password: Secret,
    #[serde(default)]
    profile: Profile,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterDeviceParams {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    id_token: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteUserParams {
    username: String,
    #[serde(default)]
    id_token: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteDeviceParams {
    device: String,
    #[serde(default)]
    id_token: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceTokenParams {
    device: String,
    secret: Secret,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateParams {
    #[serde(default)]
    id_token: Option<Secret>,
    #[serde(default)]
    hyperty: Option<String>,
    /// The reference name of what the assertion is about.
    #[serde(default)]
    contents: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    /// The reference name of the audience.
    #[serde(default)]
    origin: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValidateParams {
    assertion: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    origin: Option<String>,
}

fn params<T: DeserializeOwned>(params: &Value, shape: &'static str) -> Result<T, IdentityError> {
    // serde's message could quote a password: name the expected shape instead
    serde_json::from_value(params.clone()).map_err(|_| IdentityError::invalid("params", shape))
}

fn done(req: &Message, result: Result<Value, IdentityError>) -> Message {
    match result {
        Ok(value) => req.reply_value(ResponseCode::Ok, value),
        Err(e) => {
            debug!(id = req.id, error = %e, "identity provider request refused");
            error_response(req, &e)
        }
    }
}

fn ready(req: &Message, result: Result<Value, IdentityError>) -> Reply {
    Box::pin(actix::fut::ready(done(req, result)))
}

/// Answers `req` with what `op` — the provider's operation, the same as for
/// its HTTP and typed faces — results in, as `value` shows it.
fn answer<T: 'static>(
    req: Message,
    op: Result<Op<T>, IdentityError>,
    value: impl FnOnce(T) -> Value + 'static,
) -> Reply {
    match op {
        Ok(op) => Box::pin(op.map(move |res, _, _| done(&req, res.map(value)))),
        Err(e) => ready(&req, Err(e)),
    }
}

/// The `method` and `params` of an `execute`.
pub(crate) fn method_of(req: &Message) -> Result<(&str, &Value), IdentityError> {
    if req.kind != MessageType::Execute {
        return Err(IdentityError::Unsupported(format!(
            "{} (domain-idp takes execute)",
            req.kind
        )));
    }
    let extra: &Map<String, Value> = &req.body.extra;
    let method = extra
        .get("method")
        .ok_or(IdentityError::missing("method"))?
        .as_str()
        .ok_or(IdentityError::invalid("method", "a string"))?;
    let params = extra
        .get("params")
        .filter(|p| p.is_object())
        .ok_or(IdentityError::missing("params"))?;
    Ok((method, params))
}

/// The ID token of `params.idToken`, else `body.idToken`; none is 401.
fn id_token(req: &Message, from_params: Option<Secret>) -> Result<Secret, IdentityError> {
    from_params
        .or_else(|| {
            req.body
                .extra
                .get("idToken")
                .and_then(Value::as_str)
                .map(Secret::from)
        })
        .ok_or(IdentityError::InvalidToken(
            "missing ID token (params.idToken)",
        ))
}

/// Answers one request (rethink-wire.md §7); `source` is the sender's address.
pub(crate) fn handle(idp: &mut IdentityProvider, req: Message, source: Option<IpAddr>) -> Reply {
    let (method, p) = match method_of(&req) {
        Ok(v) => v,
        Err(e) => return ready(&req, Err(e)),
    };
    match method {
        "login" => {
            let op = params::<LoginParams>(p, "{username, password[, deviceToken]}").map(|m| {
                idp.login(Login {
                    username: m.username,
                    password: m.password,
                    device: m.device_token,
                    source,
                })
            });
            answer(req, op, |t| {
                json!({
                    "idToken": t.token.expose(),
                    "tokenType": "Bearer",
                    "expires": t.claims.exp,
                    "userURL": t.claims.sub,
                })
            })
        }
        "registerUser" => {
            let op = params::<RegisterParams>(p, "{username, password[, profile]}").map(|m| {
                idp.register_user(RegisterUser {
                    username: m.username,
                    password: m.password,
                    profile: m.profile,
                })
            });
            answer(req, op, |u| serde_json::to_value(u).unwrap_or_default())
        }
        "generateAssertion" => {
            let op = (|| {
                let m = params::<GenerateParams>(p, "{idToken, hyperty[, audience]}")?;
                let id_token = m
                    .id_token
                    .or_else(|| {
                        req.body
                            .extra
                            .get("idToken")
                            .and_then(Value::as_str)
                            .map(Secret::from)
                    })
                    .ok_or(IdentityError::missing("params.idToken"))?;
                let hyperty = m
                    .hyperty
                    .or(m.contents)
                    .ok_or(IdentityError::missing("params.hyperty"))?
                    .parse()
                    .map_err(|_| IdentityError::invalid("params.hyperty", "a hyperty URL"))?;
                let audience = m
                    .audience
                    .or(m.origin)
                    .unwrap_or_else(|| DEFAULT_ASSERTION_AUDIENCE.to_owned());
                Ok(idp.issue_assertion(IssueAssertion {
                    id_token,
                    hyperty,
                    audience,
                }))
            })();
            answer(req, op, |a| {
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
        "validateAssertion" => {
            let result = (|| {
                let m = params::<ValidateParams>(p, "{assertion[, audience]}")?;
                let audience = m
                    .audience
                    .or(m.origin)
                    .unwrap_or_else(|| DEFAULT_ASSERTION_AUDIENCE.to_owned());
                let v = idp.verifier().verify_assertion(&m.assertion, &audience)?;
                Ok(json!({
                    "identity": v.user,
                    "contents": v.hyperty,
                    "userProfile": v.user_profile,
                    "idp": v.idp,
                    "expires": v.expires,
                }))
            })();
            ready(&req, result)
        }
        "registerDevice" => {
            let op = params::<RegisterDeviceParams>(p, "{idToken[, label]}").and_then(|m| {
                let id_token = id_token(&req, m.id_token)?;
                Ok(idp.register_device(RegisterDevice {
                    label: m.label,
                    id_token,
                }))
            });
            answer(req, op, |d| {
                json!({
                    "device": d.device,
                    "secret": d.secret.expose(),
                    "runtimeURL": d.runtime,
                })
            })
        }
        "deleteUser" => {
            let op = params::<DeleteUserParams>(p, "{username, idToken}").and_then(|m| {
                let id_token = id_token(&req, m.id_token)?;
                Ok(idp.delete_user(DeleteUser {
                    username: m.username,
                    id_token,
                }))
            });
            answer(
                req,
                op,
                |d| json!({"userURL": d.subject, "devices": d.devices}),
            )
        }
        "deleteDevice" => {
            let op = params::<DeleteDeviceParams>(p, "{device, idToken}").and_then(|m| {
                let id_token = id_token(&req, m.id_token)?;
                Ok(idp.delete_device(DeleteDevice {
                    device: m.device,
                    id_token,
                }))
            });
            answer(req, op, |d| json!({"runtimeURL": d.subject}))
        }
        "deviceToken" => {
            let op = params::<DeviceTokenParams>(p, "{device, secret}").map(|m| {
                idp.device_token(DeviceToken {
                    device: m.device,
                    secret: m.secret,
                })
            });
            answer(req, op, |t| {
                json!({
                    "deviceToken": t.token.expose(),
                    "tokenType": "Bearer",
                    "expires": t.claims.exp,
                    "runtimeURL": t.claims.sub,
                })
            })
        }
        "getLoginEndpoint" => {
            let base = idp
                .config()
                .public_url
                .as_deref()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_owned();
            ready(
                &req,
                Ok(json!({
                    "loginUrl": format!("{base}/idp/login"),
                    "method": "POST",
                    "registerUrl": format!("{base}/idp/users"),
                    "jwksUrl": format!("{base}/.well-known/jwks.json"),
                    "issuer": idp.verifier().issuer(),
                })),
            )
        }
        "getJwks" => ready(
            &req,
            Ok(serde_json::to_value(idp.verifier().jwks()).unwrap_or_default()),
        ),
        other => {
            let name = super::verifier::short(other);
            ready(
                &req,
                Err(IdentityError::Unsupported(format!("method {name:?}"))),
            )
        }
    }
}
