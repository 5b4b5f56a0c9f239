//! Identity: the **identity provider** embedded in a messaging node
//! (`domain-idp://<D>` and HTTP) and the **Identity Module** of a runtime
//! (`<runtimeURL>/idm`).
//!
//! Together they answer threat T1 (unauthorised access, design.md §7): a runtime
//! proves who it is with a device token, a user proves who they are with an ID
//! token, and every message a hyperty sends to another runtime carries an
//! identity assertion — an EdDSA-signed JWT saying "this hyperty acts for this
//! user" — that any receiver can check against the issuing domain's public keys.
//!
//! # Identity provider (node side)
//!
//! [`IdentityProvider`] is an actor for one domain D, built from an [`IdpConfig`].
//! It owns the users, the devices and the Ed25519 signing keys.
//!
//! | sender | message | reply |
//! |---|---|---|
//! | HTTP handlers ([`configure`]), the node, tests | [`RegisterUser`] | [`UserInfo`]; 400 bad name/password, 409 exists, 429 full |
//! | same | [`Login`] (`device`: a device token, optional; `source`: the client's IP) | [`IssuedToken`] (ID token); 401 bad credentials, 429 throttled |
//! | same | [`RegisterDevice`] (the owner's ID token) | [`DeviceCredentials`] (id + secret, shown once); 401 without a valid ID token |
//! | same | [`DeleteUser`] / [`DeleteDevice`] (the user's / owner's or an admin's ID token) | [`Deletion`]; every token of the subject is revoked; 403 someone else's |
//! | same | [`DeviceToken`] | [`IssuedToken`] (device token for the runtime itself) |
//! | same | [`IssueAssertion`] | [`IdentityAssertion`] binding the ID token's user to a hyperty |
//! | the node's catalogue | [`SignDescriptor`] | a JWS of the descriptor, checked with [`verify_descriptor`] |
//! | operators | [`RotateKeys`] | the new `kid`; old keys stay published until their tokens expire (in a cluster: the domain's keys, taken by every node within a second) |
//! | the node, when it stops | [`Shutdown`] | the provider stops and closes its store |
//! | HTTP `/.well-known/jwks.json` | [`Jwks`] | [`JwkSet`] |
//! | the node, for each reTHINK message to `domain-idp://<D>` | [`IdpRequest`] | the response message |
//!
//! The node verifies tokens **without a message hop** through a [`TokenVerifier`]
//! (get it with [`IdentityProvider::verifier`] before starting the actor). It
//! shares the provider's key set and revocations, so rotations and deletions are
//! seen at once; [`TokenVerifier::revocation_epoch`] and
//! [`TokenVerifier::is_token_revoked`] let the node's session manager find live
//! sessions of deleted users or devices cheaply and close them (401).
//!
//! Token claims are described at [`Claims`]: `iss` = `domain-idp://<D>`, `sub` =
//! `user://<D>/<username>` (ID tokens, assertions) or
//! `hyperty-runtime://<D>/<device>` (device tokens), `aud`, `exp`, `iat`, `nbf`,
//! `jti`, `token_use` (`id` / `device` / `assertion`), `device`, `hyperty`, and
//! the OpenID profile claims. Only `alg: EdDSA` is ever accepted.
//!
//! **Seed 001, device vs end-user registration.** A device (runtime) is
//! registered by a logged-in user, its owner ([`RegisterDevice`] with the user's
//! ID token; at most [`max_devices_per_user`](IdpConfig::max_devices_per_user)),
//! and trades its secret for device tokens ([`DeviceToken`]) that authenticate
//! the runtime's session; users register and log in separately
//! ([`RegisterUser`], [`Login`]). A login may present the device token, and then
//! the ID token names the device; any number of users may log in on one device,
//! each with their own ID token.
//!
//! **State.** Signing keys persist in one file under
//! [`data_dir`](IdpConfig::data_dir) ([`KEY_FILE_NAME`], written atomically with
//! mode 0600); users, password hashes, devices (with their owners) and
//! revocations in a redb database beside it ([`STORE_FILE_NAME`], mode 0600, the
//! directory 0700), written before each change is answered. A restarted provider
//! knows every user and device it knew: nobody can register a taken name again.
//! Passwords are hashed with Argon2id ([`KdfParams`]) on
//! [`max_concurrent_hashes`](IdpConfig::max_concurrent_hashes) dedicated threads,
//! each reusing one memory block, so hashing memory stays bounded under any load;
//! [`hash_queue`](IdpConfig::hash_queue) more requests may wait, beyond that they
//! answer 429. Failed logins back off per account and per source
//! ([`ThrottleConfig`]) without locking the real user out. Device secrets are
//! 256-bit random values stored as SHA-256. No password, secret or token is ever
//! logged.
//!
//! ## Wire form (`domain-idp://<D>`)
//!
//! Requests are `execute {method, params}` (rethink-wire.md §7); answers are
//! `{code:200, value}` or `{code, description}`. A missing `method` or `params` is
//! 400, bad credentials 401.
//!
//! | method | params | value |
//! |---|---|---|
//! | `login` | `{username, password, deviceToken?}` | `{idToken, tokenType, expires, userURL}` |
//! | `generateAssertion` | `{idToken (or body.idToken), hyperty (or contents), audience (or origin)?}` | `{assertion, idp, userProfile, hyperty, expires, identity}` |
//! | `validateAssertion` | `{assertion, audience (or origin)?}` — this provider's assertions only | `{identity:userURL, contents:hyperty, userProfile, idp, expires}` |
//! | `getLoginEndpoint` | `{}` | `{loginUrl, method, registerUrl, jwksUrl, issuer}` |
//! | `registerUser` | `{username, password, profile?}` | `{userURL, username, profile}` |
//! | `registerDevice` | `{idToken (or body.idToken), label?}` — the owner's ID token | `{device, secret, runtimeURL}` |
//! | `deleteUser` | `{username, idToken (or body.idToken)}` — that user's or an admin's | `{userURL, devices}` |
//! | `deleteDevice` | `{device, idToken (or body.idToken)}` — its owner's or an admin's | `{runtimeURL}` |
//! | `deviceToken` | `{device, secret}` | `{deviceToken, tokenType, expires, runtimeURL}` |
//! | `getJwks` | `{}` | the JWK set |
//!
//! HTTP routes are listed at [`configure`].
//!
//! ```
//! use hyperty::identity::{
//!     IdentityError, IdentityProvider, IdpConfig, KdfParams, Login, Profile, RegisterUser,
//!     RotateKeys, Secret,
//! };
//! use hyperty::prelude::*;
//!
//! # #[actix::main] async fn main() {
//! let config = IdpConfig { kdf: KdfParams::fast_insecure(), ..IdpConfig::default() };
//! let idp = IdentityProvider::new("example.com", config).unwrap();
//! let verifier = idp.verifier(); // for the node's hot path
//! let idp = idp.start();
//!
//! idp.send(RegisterUser {
//!     username: "alice".into(),
//!     password: Secret::new("correct horse battery"),
//!     profile: Profile { cn: Some("Alice".into()), ..Profile::default() },
//! })
//! .await
//! .unwrap()
//! .unwrap();
//!
//! let login = |password: &str| Login {
//!     username: "alice".into(),
//!     password: Secret::new(password),
//!     device: None,
//!     source: None,
//! };
//! let wrong = idp.send(login("wrong password")).await.unwrap();
//! assert_eq!(wrong.unwrap_err(), IdentityError::BadCredentials);
//!
//! let token = idp.send(login("correct horse battery")).await.unwrap().unwrap();
//! let claims = verifier.verify_token(token.token.expose()).unwrap();
//! assert_eq!(claims.sub, "user://example.com/alice");
//!
//! // a rotation keeps earlier tokens valid
//! idp.send(RotateKeys).await.unwrap().unwrap();
//! assert!(verifier.verify_token(token.token.expose()).is_ok());
//! assert_eq!(verifier.jwks().keys.len(), 2);
//! # }
//! ```
//!
//! # Identity Module (runtime side)
//!
//! [`IdentityModule`] is an actor in each runtime, listening on the bus at
//! `<runtimeURL>/idm`, built from an [`IdmConfig`] (start it with
//! [`IdmHandle::start`], or set [`RuntimeConfig::identity`](crate::RuntimeConfig)
//! and use [`RuntimeHandle::idm`](crate::RuntimeHandle::idm)).
//!
//! | sender | message | reply |
//! |---|---|---|
//! | the application | [`LoginUser`] / [`LogoutUser`] / [`ListSessions`] | the user's session at this runtime (ID token kept inside) |
//! | the runtime, when a hyperty with a user registers | [`BindIdentity`] | the bound [`IdentityAssertion`] |
//! | the runtime, when it stops | [`UnbindIdentity`] | — |
//! | anyone | [`GenerateAssertion`], [`ValidateAssertion`], [`FetchKeys`], [`BoundIdentity`] | typed results |
//! | its own timer | [`RefreshBindings`] | renews assertions before they expire |
//! | hyperties, over the bus to `<runtimeURL>/idm` | `execute {method:"validateAssertion", params:{assertion \| identity, idp?, audience?}}` | `{code:200, value: VerifiedIdentity}` |
//! | same | `execute {method:"generateAssertion" \| "getIdentity", params:{audience?}}` | a fresh assertion / the bound identity **of the sender itself** (404 if none) |
//!
//! Providers are reached over HTTP: `<base>/idp/login`, `<base>/idp/assertions`,
//! `<base>/.well-known/jwks.json`, where `<base>` is
//! [`idp_endpoints`](IdmConfig::idp_endpoints)`[domain]` or `https://<domain>`
//! (only with [`discover_unlisted_idps`](IdmConfig::discover_unlisted_idps)).
//! Fetched key sets are cached for [`jwks_ttl_secs`](IdmConfig::jwks_ttl_secs)
//! (at most [`max_cached_idps`](IdmConfig::max_cached_idps) providers); an
//! unknown `kid` causes at most one refetch per
//! [`jwks_refetch_interval_secs`](IdmConfig::jwks_refetch_interval_secs);
//! concurrent fetches of one provider are joined. A provider without an endpoint
//! is [`IdentityError::UnknownIdp`]; one that cannot be fetched is
//! [`IdentityError::IdpUnreachable`] — either way the assertion is rejected.
//!
//! The [`IdentityInterceptor`] (installed on the bus when the module starts)
//! adds `body.identity` to outgoing hyperty messages; [`AssertionCheck`] (from
//! [`IdmHandle::verifier`]) verifies identities synchronously from the cache, for
//! the policy engine.
//!
//! Time comes from a [`Clock`] (the one clock of [`hyperty_actors::clock`], re-exported
//! here): on a node the provider reads the node's clock, in a runtime the module
//! reads the runtime's; tests use a [`ManualClock`] instead of sleeping.

mod cache;
mod config;
mod error;
mod hasher;
mod http;
mod idm;
mod idp;
mod interceptor;
mod jwt;
mod keys;
mod model;
pub(crate) mod peer;
mod shared;
mod store;
#[cfg(test)]
mod tests;
mod throttle;
mod verifier;
mod wire;

pub use self::cache::{AssertionCheck, PolicyVerifier};
pub(crate) use self::config::valid_domain;
pub use self::config::{
    IdmConfig, IdpConfig, KdfParams, DEFAULT_ASSERTION_AUDIENCE, MAX_PASSWORD_LEN, MAX_TOKEN_LEN,
};
pub use self::error::IdentityError;
pub use self::http::{configure, MAX_HTTP_BODY};
pub use self::idm::{
    BindIdentity, BoundIdentity, FetchKeys, GenerateAssertion, IdentityModule, IdmHandle,
    ListSessions, LoginUser, LogoutUser, Ready, RefreshBindings, UnbindIdentity, UserSession,
    ValidateAssertion, MAX_IDP_ANSWER, MAX_REFRESH_PER_TICK, PREFETCH_QUEUE,
};
pub use self::idp::{
    DeleteDevice, DeleteUser, Deletion, DeviceToken, IdentityProvider, IdpRequest, IssueAssertion,
    IssuePeerToken, Jwks, Login, RegisterDevice, RegisterUser, RotateKeys, Shutdown,
    SignDescriptor, KEY_PRUNE_INTERVAL,
};
pub use self::interceptor::{IdentityInterceptor, INTERCEPTOR_NAME};
pub use self::jwt::{verify_descriptor, DescriptorClaims};
pub use self::keys::{Jwk, JwkSet, KEY_FILE_NAME};
pub use self::model::{
    Claims, DeviceCredentials, IdentityAssertion, IssuedToken, Profile, Secret, TokenUse, UserInfo,
    UserProfile, VerifiedIdentity, MAX_AVATAR_LEN, MAX_LABEL_LEN, MAX_PROFILE_FIELD_LEN,
    MAX_USERNAME_LEN,
};
pub use self::store::STORE_FILE_NAME;
pub use self::throttle::ThrottleConfig;
pub use self::verifier::TokenVerifier;
pub use hyperty_actors::clock::{Clock, ManualClock, SystemClock};
