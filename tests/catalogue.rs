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
