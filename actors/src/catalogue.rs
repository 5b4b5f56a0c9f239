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
}

impl ToResponseCode for IntegrityError {
    fn response_code(&self) -> ResponseCode {
        match self {
            IntegrityError::UnknownFactory(_) => ResponseCode::NotFound,
            IntegrityError::NotAHyperty(_) => ResponseCode::BadRequest,
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
        let well_formed = self.source_hash.len() == 64
            && self
                .source_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(IntegrityError::BadHash {
                name: self.name.clone(),
            });
        }
        let actual = sha256_hex(package);
        // the hash is public: a plain comparison leaks nothing
        if actual != self.source_hash {
            return Err(IntegrityError::Mismatch {
                name: self.name.clone(),
                expected: self.source_hash.clone(),
                actual,
            });
        }
        Ok(())
    }
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
}
