//! Fetching and checking catalogue objects over HTTP: the descriptor, the
//! domain's key set, the source package. Nothing is used before its
//! signature and its hash are checked.

use std::time::Duration;

use hyperty_actors::catalogue::{CatalogueDescriptor, ObjectType};

use super::{UaConfig, UaError};
use crate::identity::{verify_descriptor, JwkSet};

/// A checked catalogue object: signed by `issuer`, its package hashed.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Where the descriptor was read.
    pub url: String,
    /// The domain whose IdP signed it (`domain-idp://<domain>`).
    pub domain: String,
    /// The signed descriptor.
    pub descriptor: CatalogueDescriptor,
    /// The source package, hashed against the descriptor.
    pub package: String,
}

/// Splits `http://host:port/path` into origin and path.
fn split_origin(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let slash = rest.find('/').unwrap_or(rest.len());
    Some((&url[..7 + slash], &url[7 + slash..]))
}

/// Where a descriptor URL is read over HTTP, and the domain it must be signed by
/// (if the URL says). `hyperty-catalogue://<D>/<path>` reads `<D>`'s catalogue
/// (its `resolve` entry, else `https://<D>`); `http://…` is read as is.
pub(crate) fn locate(config: &UaConfig, url: &str) -> Result<(String, Option<String>), UaError> {
    if let Some(rest) = url.strip_prefix("hyperty-catalogue://") {
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        let base = config.catalogue_base(domain);
        return Ok((format!("{base}/{path}"), Some(domain.to_owned())));
    }
    if let Some((origin, _)) = split_origin(url) {
        let host = &origin[7..];
        let domain = config
            .resolve
            .iter()
            .find(|(_, h)| h.as_str() == host)
            .map(|(d, _)| d.clone());
        return Ok((url.to_owned(), domain));
    }
    Err(UaError::BadUrl(url.chars().take(200).collect()))
}

/// The descriptor URL of `name` of `kind` in `domain`'s catalogue.
pub(crate) fn catalogue_url(domain: &str, kind: ObjectType, name: &str) -> String {
    format!("hyperty-catalogue://{domain}/.well-known/{kind}/{name}")
}

async fn get(url: &str, limit: usize, timeout: Duration) -> Result<bytes::Bytes, UaError> {
    let unreachable = |reason: String| UaError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let client = crate::bridge::http_client(timeout);
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    if status == awc::http::StatusCode::NOT_FOUND {
        return Err(UaError::NotFound(url.to_owned()));
    }
    if !status.is_success() {
        return Err(unreachable(format!("answered {status}")));
    }
    resp.body()
        .limit(limit)
        .await
        .map_err(|e| unreachable(format!("body: {e}")))
}

/// Reads the descriptor at `url`, checks its signature against the signing
/// domain's JWKS (and that it is `kind`), reads its package and checks the hash.
pub(crate) async fn fetch(
    config: &UaConfig,
    url: &str,
    kind: ObjectType,
) -> Result<Fetched, UaError> {
    let (http_url, expected_domain) = locate(config, url)?;
    let Some((origin, _)) = split_origin(&http_url) else {
        return Err(UaError::BadUrl(http_url));
    };
    let bad = |reason: String| UaError::BadDescriptor {
        url: url.to_owned(),
        reason,
    };
    let raw = get(&http_url, config.max_descriptor_bytes, config.fetch_timeout).await?;
    let served: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
    let jws = served
        .get("signature")
        .and_then(|s| s.as_str())
        .ok_or_else(|| UaError::Signature {
            url: url.to_owned(),
            reason: "the descriptor is not signed".to_owned(),
        })?;
    let jwks_raw = get(
        &format!("{origin}/.well-known/jwks.json"),
        config.max_descriptor_bytes,
        config.fetch_timeout,
    )
    .await?;
    let jwks: JwkSet = serde_json::from_slice(&jwks_raw).map_err(|e| UaError::Signature {
        url: url.to_owned(),
        reason: format!("the domain's key set does not parse: {e}"),
    })?;
    let issuer = expected_domain
        .as_ref()
        .map(|d| format!("domain-idp://{d}"));
    let claims =
        verify_descriptor(jws, &jwks, issuer.as_deref()).map_err(|e| UaError::Signature {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let descriptor = claims.descriptor;
    descriptor.check().map_err(|e| bad(e.to_string()))?;
    if descriptor.object_type != kind {
        return Err(bad(format!(
            "a {} descriptor where a {kind} was asked for",
            descriptor.object_type
        )));
    }
    let domain = claims
        .iss
        .strip_prefix("domain-idp://")
        .unwrap_or(&claims.iss)
        .to_owned();
    let package = match (&descriptor.source_package, &descriptor.source_package_url) {
        (Some(inline), _) => inline.source_code.as_bytes().to_vec(),
        (None, Some(p)) => {
            let package_url = if p.starts_with('/') {
                format!("{origin}{p}")
            } else {
                locate(config, p)?.0
            };
            get(&package_url, config.max_package_bytes, config.fetch_timeout)
                .await?
                .to_vec()
        }
        (None, None) => return Err(bad("no source package".to_owned())),
    };
    descriptor.verify_package(&package)?;
    let package =
        String::from_utf8(package).map_err(|_| bad("the package is not UTF-8".to_owned()))?;
    tracing::info!(name = %descriptor.object_name, version = %descriptor.version, %domain, "catalogue object verified");
    Ok(Fetched {
        url: url.to_owned(),
        domain,
        descriptor,
        package,
    })
}
