use std::path::PathBuf;

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let d = std::env::temp_dir().join(format!("catalogue-test-{}", uuid::Uuid::new_v4()));
        for k in ObjectType::ALL {
            std::fs::create_dir_all(d.join(k.as_str())).unwrap();
        }
        Dir(d)
    }

    fn write(&self, rel: &str, content: &str) {
        std::fs::write(self.0.join(rel), content).unwrap();
    }

    fn load(&self) -> (Catalogue, Vec<CatalogueError>) {
        Catalogue::load_dir(&self.0, 1024).unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stub_descriptor(name: &str, package: &str) -> String {
    serde_json::json!({
        "objectName": name, "objectType": "protocolstub", "version": "1.0.0",
        "sourcePackageURL": package,
        "configuration": {"url": "ws://127.0.0.1:1/ws"},
        "constraints": {}, "policies": [], "dataObjects": ["connection"]
    })
    .to_string()
}

#[test]
fn good_files_load_and_hash_the_package() {
    let d = Dir::new();
    d.write("protocolstub/Raw.json", &stub_descriptor("Raw", "Raw.js"));
    d.write("protocolstub/Raw.js", "bus.listen(function (m) {});");
    d.write(
        "dataschema/Chat.json",
        r#"{"objectName":"Chat","objectType":"dataschema","version":"2",
            "sourcePackage":{"sourceCode":"{\"type\":\"object\"}","encoding":"plain"}}"#,
    );
    let (c, refused) = d.load();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(c.len(), 2);
    let raw = c.get(ObjectType::Protocolstub, "Raw").unwrap();
    assert_eq!(
        raw.descriptor.source_hash,
        sha256_hex(b"bus.listen(function (m) {});")
    );
    assert_eq!(
        raw.descriptor.source_package_url.as_deref(),
        Some("/.well-known/protocolstub/Raw/sourcePackage")
    );
    assert_eq!(raw.descriptor.endpoint(), Some("ws://127.0.0.1:1/ws"));
    assert!(raw.descriptor.verify_package(&raw.package).is_ok());
    assert_eq!(c.names(ObjectType::Dataschema), vec!["Chat"]);
    assert!(c.get(ObjectType::Hyperty, "Raw").is_none());
}

#[test]
fn bad_files_are_refused_one_by_one() {
    let d = Dir::new();
    d.write(
        "protocolstub/Good.json",
        &stub_descriptor("Good", "Good.js"),
    );
    d.write("protocolstub/Good.js", "1;");
    // does not parse
    d.write("protocolstub/Broken.json", "{\"objectName\": ");
    // the package is missing
    d.write(
        "protocolstub/Lost.json",
        &stub_descriptor("Lost", "Lost.js"),
    );
    // the package is outside the directory
    d.write(
        "protocolstub/Out.json",
        &stub_descriptor("Out", "../hyperty/x.js"),
    );
    // the stated hash is wrong
    let mut wrong: serde_json::Value =
        serde_json::from_str(&stub_descriptor("Wrong", "Good.js")).unwrap();
    wrong["sourceHash"] = "0".repeat(64).into();
    d.write("protocolstub/Wrong.json", &wrong.to_string());
    // name and file differ; type and directory differ; unknown field; too big
    d.write(
        "protocolstub/Other.json",
        &stub_descriptor("Renamed", "Good.js"),
    );
    d.write("hyperty/Stub.json", &stub_descriptor("Stub", "Stub.js"));
    d.write("hyperty/Stub.js", "1;");
    let mut extra: serde_json::Value =
        serde_json::from_str(&stub_descriptor("Extra", "Good.js")).unwrap();
    extra["evil"] = 1.into();
    d.write("protocolstub/Extra.json", &extra.to_string());
    d.write("protocolstub/Big.json", &stub_descriptor("Big", "Big.js"));
    d.write("protocolstub/Big.js", &"x".repeat(2000));
    // a hyperty may not take the node's own name
    d.write(
        "hyperty/node.json",
        r#"{"objectName":"node","objectType":"hyperty","version":"1","sourcePackage":{"sourceCode":"1"}}"#,
    );
    let (c, refused) = d.load();
    assert_eq!(c.names(ObjectType::Protocolstub), vec!["Good"]);
    assert_eq!(c.len(), 1);
    assert_eq!(refused.len(), 9, "{refused:#?}");
    let text: Vec<String> = refused.iter().map(|e| e.to_string()).collect();
    assert!(text
        .iter()
        .any(|t| t.contains("Broken.json") && t.contains("not a valid descriptor")));
    assert!(text.iter().any(|t| t.contains("Lost.js")));
    assert!(text
        .iter()
        .any(|t| t.contains("Out.json") && t.contains("beside the descriptor")));
    assert!(refused
        .iter()
        .any(|e| matches!(e, CatalogueError::Hash { .. })));
    assert!(text
        .iter()
        .any(|t| t.contains("differs from the file name")));
    assert!(text.iter().any(|t| t.contains("in the hyperty directory")));
    assert!(text.iter().any(|t| t.contains("evil")));
    assert!(text
        .iter()
        .any(|t| t.contains("Big.js") && t.contains("more than 1024")));
    assert!(text.iter().any(|t| t.contains("reserved")));
}

#[test]
fn a_missing_directory_is_an_error_and_no_directory_is_empty() {
    let missing = CatalogueSection {
        dir: Some(std::env::temp_dir().join(format!("nope-{}", uuid::Uuid::new_v4()))),
        ..CatalogueSection::default()
    };
    assert!(matches!(
        Catalogue::load(&missing),
        Err(CatalogueError::Dir { .. })
    ));
    assert!(Catalogue::load(&CatalogueSection::default())
        .unwrap()
        .is_empty());
}
