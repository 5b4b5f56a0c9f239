//! Catalogue descriptors and code authenticity (threat T3).
//!
//! A [`Descriptor`] says what a catalogue deploys: a hyperty, protocol stub or
//! runtime, its name and version, the factory that builds it and the SHA-256 of its
//! source package. Before anything described is instantiated, the package that
//! arrived is hashed and compared with the descriptor ([`Descriptor::verify`]); a
//! mismatch is refused with [`IntegrityError`] (403), so a tampered package or a
//! tampered descriptor never runs. A [`FactoryTable`] maps the descriptor's factory
//! id to the Rust code that builds a hyperty, which is how a runtime deploys from a
//! descriptor (`RuntimeHandle::deploy_hyperty`).
//!
//! ```
//! use hyperty_actors::catalogue::{Descriptor, DescriptorKind, IntegrityError};
//!
//! let package = b"the hyperty's source package";
//! let d = Descriptor::for_package(DescriptorKind::Hyperty, "Chat", "1.0.0", "chat", package);
//! assert!(d.verify(package).is_ok());
//! assert!(matches!(d.verify(b"tampered"), Err(IntegrityError::Mismatch { .. })));
//!
//! // descriptors travel as JSON (reTHINK catalogue style)
//! let json = serde_json::to_string(&d).unwrap();
//! let back: Descriptor = serde_json::from_str(&json).unwrap();
//! assert_eq!(back, d);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ToResponseCode;
use crate::hyperty::HypertySpec;
use crate::message::ResponseCode;

/// What a descriptor deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DescriptorKind {
    /// A hyperty.
    Hyperty,
    /// A protocol stub.
    Protostub,
    /// A runtime.
    Runtime,
}

/// A catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Descriptor {
    /// What it deploys.
    pub kind: DescriptorKind,
    /// Its name, e.g. `GroupChatManager`.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The id of the factory that builds it (see [`FactoryTable`]).
    pub factory: String,
    /// Lowercase hex SHA-256 of the source package.
    pub source_hash: String,
    /// Policies it ships with (opaque here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<serde_json::Value>,
    /// Data-object schemes and schemas it uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_objects: Vec<String>,
}

/// Why a package does not match its descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The descriptor's hash is not 64 lowercase hex digits.
    #[error("descriptor {name}: sourceHash is not a SHA-256 in lowercase hex")]
    BadHash {
        /// The descriptor's name.
        name: String,
    },
    /// The package's hash differs from the descriptor's.
    #[error("descriptor {name}: package hash {actual} does not match {expected}")]
    Mismatch {
        /// The descriptor's name.
        name: String,
        /// What the descriptor says.
        expected: String,
        /// What the package hashes to.
        actual: String,
    },
    /// The descriptor names a factory this runtime does not have.
    #[error("no factory {0:?} in this runtime")]
    UnknownFactory(String),
    /// The descriptor is not for a hyperty.
    #[error("descriptor {0} does not describe a hyperty")]
    NotAHyperty(String),
    /// The descriptor is malformed (the reason).
    #[error("malformed descriptor: {0}")]
    BadDescriptor(String),
}

impl ToResponseCode for IntegrityError {
    fn response_code(&self) -> ResponseCode {
        match self {
            IntegrityError::UnknownFactory(_) => ResponseCode::NotFound,
            IntegrityError::NotAHyperty(_) | IntegrityError::BadDescriptor(_) => {
                ResponseCode::BadRequest
            }
            _ => ResponseCode::Forbidden,
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl Descriptor {
    /// A descriptor for `package` (its hash computed here).
    pub fn for_package(
        kind: DescriptorKind,
        name: &str,
        version: &str,
        factory: &str,
        package: &[u8],
    ) -> Descriptor {
        Descriptor {
            kind,
            name: name.to_owned(),
            version: version.to_owned(),
            factory: factory.to_owned(),
            source_hash: sha256_hex(package),
            policies: Vec::new(),
            data_objects: Vec::new(),
        }
    }

    /// Checks that `package` is what this descriptor describes.
    pub fn verify(&self, package: &[u8]) -> Result<(), IntegrityError> {
        check_hash(&self.name, &self.source_hash, package)
    }
}

/// What a catalogue object is: the path segment of its descriptor under
/// `/.well-known/` (reTHINK `objectType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    /// A hyperty (JavaScript).
    Hyperty,
    /// A protocol stub (JavaScript).
    Protocolstub,
    /// A data-object schema (JSON Schema).
    Dataschema,
    /// A runtime.
    Runtime,
}

impl ObjectType {
    /// Every object type, in path order.
    pub const ALL: [ObjectType; 4] = [
        ObjectType::Hyperty,
        ObjectType::Protocolstub,
        ObjectType::Dataschema,
        ObjectType::Runtime,
    ];

    /// The path segment (`hyperty`, `protocolstub`, `dataschema`, `runtime`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Hyperty => "hyperty",
            ObjectType::Protocolstub => "protocolstub",
            ObjectType::Dataschema => "dataschema",
            ObjectType::Runtime => "runtime",
        }
    }

    /// Parses a path segment.
    pub fn from_segment(s: &str) -> Option<ObjectType> {
        ObjectType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source package carried inside its descriptor (reTHINK `sourcePackage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourcePackage {
    /// The code (or schema) itself.
    pub source_code: String,
    /// The class the code defines, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_code_classname: Option<String>,
    /// Only `plain` (UTF-8 text) is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// Longest object name, bytes.
pub const MAX_OBJECT_NAME: usize = 128;

/// True for names a catalogue serves: 1 to [`MAX_OBJECT_NAME`] ASCII letters,
/// digits, `-`, `_`, `.`, not starting with `.`.
pub fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_OBJECT_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A reTHINK catalogue descriptor, as served under
/// `/.well-known/<objectType>/<objectName>` and signed by the domain's IdP.
///
/// `sourceHash` is the lowercase hex SHA-256 of the source package: the bytes at
/// `sourcePackageURL`, or `sourcePackage.sourceCode` when the package is inline.
/// The code that runs is the code that was hashed ([`CatalogueDescriptor::verify_package`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogueDescriptor {
    /// Its name, e.g. `Connector`.
    pub object_name: String,
    /// What it is.
    pub object_type: ObjectType,
    /// Its version; a higher [`CatalogueDescriptor::version_key`] is newer.
    pub version: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the source package is (absolute, or relative to the catalogue).
    #[serde(
        default,
        rename = "sourcePackageURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_package_url: Option<String>,
    /// The source package itself, when it travels inside the descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_package: Option<SourcePackage>,
    /// Lowercase hex SHA-256 of the source package.
    pub source_hash: String,
    /// Configuration handed to the code; for a protocol stub `url` is the one
    /// endpoint it may open a WebSocket to.
    #[serde(default)]
    pub configuration: serde_json::Map<String, serde_json::Value>,
    /// Runtime constraints (e.g. `{"browser": true}`).
    #[serde(default)]
    pub constraints: serde_json::Map<String, serde_json::Value>,
    /// Policies it ships with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<serde_json::Value>,
    /// Data-object schemes and schema URLs it uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_objects: Vec<String>,
}

impl CatalogueDescriptor {
    /// Checks the descriptor's own shape: name, hash form, one way to the package.
    pub fn check(&self) -> Result<(), IntegrityError> {
        if !valid_object_name(&self.object_name) {
            return Err(IntegrityError::BadDescriptor(format!(
                "objectName {:?} is not a valid name",
                self.object_name.chars().take(40).collect::<String>()
            )));
        }
        if !is_sha256_hex(&self.source_hash) {
            return Err(IntegrityError::BadHash {
                name: self.object_name.clone(),
            });
        }
        match (&self.source_package_url, &self.source_package) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(IntegrityError::BadDescriptor(format!(
                    "{}: exactly one of sourcePackageURL and sourcePackage",
                    self.object_name
                )))
            }
        }
        if let Some(p) = &self.source_package {
            if p.encoding.as_deref().is_some_and(|e| e != "plain") {
                return Err(IntegrityError::BadDescriptor(format!(
                    "{}: sourcePackage encoding must be plain",
                    self.object_name
                )));
            }
        }
        Ok(())
    }

    /// Checks that `package` is the package this descriptor names.
    pub fn verify_package(&self, package: &[u8]) -> Result<(), IntegrityError> {
        check_hash(&self.object_name, &self.source_hash, package)
    }

    /// The endpoint a protocol stub may connect to (`configuration.url`).
    pub fn endpoint(&self) -> Option<&str> {
        self.configuration.get("url").and_then(|u| u.as_str())
    }

    /// The version as numbers for ordering (`1.10.0` > `1.9.2`; non-numeric
    /// parts count as 0).
    pub fn version_key(&self) -> Vec<u64> {
        self.version
            .split(['.', '-', '+'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    }
}

fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_hash(name: &str, expected: &str, package: &[u8]) -> Result<(), IntegrityError> {
    if !is_sha256_hex(expected) {
        return Err(IntegrityError::BadHash {
            name: name.to_owned(),
        });
    }
    let actual = sha256_hex(package);
    // the hash is public: a plain comparison leaks nothing
    if actual != expected {
        return Err(IntegrityError::Mismatch {
            name: name.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

type Factory = Arc<dyn Fn(&Descriptor) -> HypertySpec + Send + Sync>;

/// Factory id → the Rust code that builds a hyperty described by a descriptor.
#[derive(Clone, Default)]
pub struct FactoryTable {
    factories: HashMap<String, Factory>,
}

impl fmt::Debug for FactoryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl FactoryTable {
    /// An empty table.
    pub fn new() -> FactoryTable {
        FactoryTable::default()
    }

    /// Registers the factory `id`.
    pub fn register(
        &mut self,
        id: &str,
        build: impl Fn(&Descriptor) -> HypertySpec + Send + Sync + 'static,
    ) -> &mut Self {
        self.factories.insert(id.to_owned(), Arc::new(build));
        self
    }

    /// Verifies `package` against `descriptor` and builds the hyperty's spec;
    /// refuses a tampered package, a non-hyperty descriptor, an unknown factory.
    pub fn build(
        &self,
        descriptor: &Descriptor,
        package: &[u8],
    ) -> Result<HypertySpec, IntegrityError> {
        if descriptor.kind != DescriptorKind::Hyperty {
            return Err(IntegrityError::NotAHyperty(descriptor.name.clone()));
        }
        descriptor.verify(package)?;
        let f = self
            .factories
            .get(&descriptor.factory)
            .ok_or_else(|| IntegrityError::UnknownFactory(descriptor.factory.clone()))?;
        Ok(f(descriptor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tampering_is_refused() {
        let pkg = b"package v1";
        let mut d = Descriptor::for_package(DescriptorKind::Hyperty, "X", "1", "x", pkg);
        assert!(d.verify(pkg).is_ok());
        assert!(matches!(
            d.verify(b"package v2"),
            Err(IntegrityError::Mismatch { .. })
        ));
        d.source_hash = d.source_hash.to_uppercase();
        assert!(matches!(d.verify(pkg), Err(IntegrityError::BadHash { .. })));
        d.source_hash = "00".into();
        assert!(matches!(d.verify(pkg), Err(IntegrityError::BadHash { .. })));
        assert_eq!(
            IntegrityError::BadHash { name: "X".into() }
                .response_code()
                .as_u16(),
            403
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused_when_parsing() {
        assert!(serde_json::from_str::<Descriptor>(
            r#"{"kind":"hyperty","name":"a","version":"1","factory":"f","sourceHash":"x","evil":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Descriptor>(
            r#"{"kind":"plugin","name":"a","version":"1","factory":"f","sourceHash":"x"}"#
        )
        .is_err());
    }

    #[test]
    fn catalogue_descriptors_check_their_shape_and_order_versions() {
        let code = b"bus.listen(function () {});";
        let mut d: CatalogueDescriptor = serde_json::from_value(serde_json::json!({
            "objectName": "Raw", "objectType": "protocolstub", "version": "1.9.2",
            "sourcePackageURL": "/.well-known/protocolstub/Raw/sourcePackage",
            "sourceHash": sha256_hex(code),
            "configuration": {"url": "ws://x/ws"}
        }))
        .unwrap();
        assert!(d.check().is_ok());
        assert!(d.verify_package(code).is_ok());
        assert!(d.verify_package(b"bus.listen(function () {}) ").is_err());
        assert_eq!(d.endpoint(), Some("ws://x/ws"));
        let mut newer = d.clone();
        newer.version = "1.10.0".into();
        assert!(newer.version_key() > d.version_key());
        d.source_package = Some(SourcePackage {
            source_code: "1".into(),
            source_code_classname: None,
            encoding: None,
        });
        assert!(matches!(d.check(), Err(IntegrityError::BadDescriptor(_))));
        d.source_package_url = None;
        d.object_name = "../etc".into();
        assert!(matches!(d.check(), Err(IntegrityError::BadDescriptor(_))));
        assert_eq!(
            ObjectType::from_segment("dataschema"),
            Some(ObjectType::Dataschema)
        );
        assert_eq!(ObjectType::from_segment("plugin"), None);
    }
}
