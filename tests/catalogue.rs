//! Code authenticity (threat T3): a runtime deploys from a catalogue descriptor only
//! if the package's SHA-256 matches; a tampered package or descriptor never runs.

mod common;

use common::*;
use hyperty::actors::catalogue::{Descriptor, DescriptorKind, FactoryTable, IntegrityError};
use hyperty::prelude::*;
use hyperty::RuntimeError;
use serde_json::json;

fn factories() -> FactoryTable {
    let mut t = FactoryTable::new();
    t.register("worker", |d| {
        worker(&format!("{}.example", d.name.to_lowercase()))
    });
    t
}

#[actix::test]
async fn a_matching_package_deploys_and_a_tampered_one_is_refused() {
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let package = b"fn main() { /* the Worker hyperty, version 1 */ }".to_vec();
    let descriptor = Descriptor::for_package(
        DescriptorKind::Hyperty,
        "Worker",
        "1.0.0",
        "worker",
        &package,
    );

    let url = rt
        .deploy_hyperty(&factories(), &descriptor, &package)
        .await
        .unwrap();
    let me = rt.url().component("app");
    let r = rt.bus().post(request(&me, &url, json!({}))).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));

    // the package was altered after the catalogue signed off its hash
    let mut tampered = package.clone();
    tampered.extend_from_slice(b" steal();");
    let err = rt
        .deploy_hyperty(&factories(), &descriptor, &tampered)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Integrity(IntegrityError::Mismatch { .. })
        ),
        "{err}"
    );
    assert_eq!(err.response_code(), ResponseCode::Forbidden);

    // the descriptor was altered to point at another hash
    let mut forged = descriptor.clone();
    forged.source_hash = "0".repeat(64);
    assert!(rt
        .deploy_hyperty(&factories(), &forged, &package)
        .await
        .is_err());

    // unknown factory, wrong kind
    let mut unknown = descriptor.clone();
    unknown.factory = "nope".into();
    assert!(matches!(
        rt.deploy_hyperty(&factories(), &unknown, &package).await,
        Err(RuntimeError::Integrity(IntegrityError::UnknownFactory(_)))
    ));
    let stub = Descriptor::for_package(DescriptorKind::Protostub, "Stub", "1", "worker", &package);
    assert!(rt
        .deploy_hyperty(&factories(), &stub, &package)
        .await
        .is_err());

    // only the good deployment is registered
    assert_eq!(rt.hyperties().await.len(), 1);
}

/// A catalogue directory under the system temp dir with one JS protocol stub.
fn catalogue_dir(stub_code: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("catalogue-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(d.join("protocolstub")).unwrap();
    std::fs::write(
        d.join("protocolstub/Raw.json"),
        json!({
            "objectName": "Raw", "objectType": "protocolstub", "version": "1.0.0",
            "sourcePackageURL": "Raw.js",
            "configuration": {"url": "ws://127.0.0.1:1/ws"},
            "constraints": {"browser": true}, "policies": [], "dataObjects": []
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(d.join("protocolstub/Raw.js"), stub_code).unwrap();
    // a malformed file is refused, the node still starts
    std::fs::write(d.join("protocolstub/Broken.json"), "{").unwrap();
    d
}

#[actix::test]
async fn the_node_serves_signed_descriptors_whose_hash_covers_the_package() {
    use hyperty::identity::{verify_descriptor, IdentityError, JwkSet};
    let code = "bus.listen(function (m) { bus.post(m); });";
    let dir = catalogue_dir(code);
    let node = start_node("b.org", |c| c.catalogue.dir = Some(dir.clone()));
    let base = node.http_url();

    let (status, served) =
        http_get_json(&format!("{base}/.well-known/protocolstub/Raw"), None).await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["objectName"], "Raw");
    assert_eq!(served["configuration"]["url"], "ws://127.0.0.1:1/ws");
    let jws = served["signature"].as_str().unwrap().to_owned();
    let (_, jwks) = http_get_json(&format!("{base}/.well-known/jwks.json"), None).await;
    let jwks: JwkSet = serde_json::from_value(jwks).unwrap();

    let claims = verify_descriptor(&jws, &jwks, Some("domain-idp://b.org")).unwrap();
    assert_eq!(claims.descriptor.object_name, "Raw");
    assert_eq!(
        claims.descriptor.source_package_url.as_deref(),
        Some("/.well-known/protocolstub/Raw/sourcePackage")
    );
    let package = awc::Client::default()
        .get(format!("{base}/.well-known/protocolstub/Raw/sourcePackage"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    assert_eq!(&package[..], code.as_bytes());
    claims.descriptor.verify_package(&package).unwrap();
    let mut changed = package.to_vec();
    changed[0] ^= 1;
    assert!(matches!(
        claims.descriptor.verify_package(&changed),
        Err(IntegrityError::Mismatch { .. })
    ));

    // another domain's issuer, a changed payload, a key the domain does not publish
    assert_eq!(
        verify_descriptor(&jws, &jwks, Some("domain-idp://a.org")),
        Err(IdentityError::WrongIssuer)
    );
    let parts: Vec<&str> = jws.split('.').collect();
    let mut payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .unwrap(),
    )
    .unwrap();
    payload["descriptor"]["sourceHash"] = json!("0".repeat(64));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            payload.to_string()
        ),
        parts[2]
    );
    assert!(verify_descriptor(&forged, &jwks, Some("domain-idp://b.org")).is_err());
    let other = start_node("c.org", |_| {});
    let (_, other_jwks) =
        http_get_json(&format!("{}/.well-known/jwks.json", other.http_url()), None).await;
    let other_jwks: JwkSet = serde_json::from_value(other_jwks).unwrap();
    assert!(verify_descriptor(&jws, &other_jwks, None).is_err());

    // unknown names and types are 404 with a description; the list names what is served
    let (status, body) =
        http_get_json(&format!("{base}/.well-known/protocolstub/Broken"), None).await;
    assert_eq!(status, 404);
    assert!(body["description"].as_str().unwrap().contains("Broken"));
    let (status, _) = http_get_json(&format!("{base}/.well-known/plugin/Raw"), None).await;
    assert_eq!(status, 404);
    let (_, list) = http_get_json(&format!("{base}/.well-known/protocolstub"), None).await;
    assert_eq!(list, json!(["Raw"]));
    // the federation's own document keeps its path
    let (status, doc) = http_get_json(&format!("{base}/.well-known/hyperty/node"), None).await;
    assert_eq!(status, 200, "{doc}");
    stop_all(&[node, other]).await;
    let _ = std::fs::remove_dir_all(dir);
}
