//! The domain's catalogue, served by the node (reTHINK "protocol on the fly").
//!
//! A node configured with `[catalogue] dir` loads, at start, every descriptor under
//! `<dir>/<objectType>/<objectName>.json` (`objectType` one of `hyperty`,
//! `protocolstub`, `dataschema`, `runtime`) and serves it at
//! `/.well-known/<objectType>/<objectName>`:
//!
//! * a descriptor names its source package either as a file beside it
//!   (`"sourcePackageURL": "Connector.js"`, served at
//!   `/.well-known/<objectType>/<objectName>/sourcePackage` and rewritten to that
//!   path) or inline (`"sourcePackage": {"sourceCode": "…"}`);
//! * `sourceHash`, the SHA-256 of the package, is computed at load; a descriptor
//!   that states one must state the right one;
//! * each answer carries `signature`: a compact JWS (EdDSA, the identity
//!   provider's current key) whose payload is `{iss: "domain-idp://<D>", iat,
//!   descriptor}`, checked against the domain's `/.well-known/jwks.json` with
//!   [`verify_descriptor`](crate::identity::verify_descriptor). Only the signed
//!   payload is trusted; the unsigned fields beside it are for people.
//!
//! A file that cannot be read, does not parse, names a package that is missing,
//! too large or outside its directory, or states a wrong hash is refused with a
//! [`CatalogueError`] logged at `warn` naming the file; the rest is served.
//! A missing or unreadable directory stops the node ([`CatalogueError::Dir`]).
//!
//! | route | answer |
//! |---|---|
//! | `GET /.well-known/<type>` | 200 `["name", …]` |
//! | `GET /.well-known/<type>/<name>` | 200 the descriptor + `signature`; 404 `{code, description}` |
//! | `GET /.well-known/<type>/<name>/sourcePackage` | 200 the package bytes; 404 |

mod http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hyperty_actors::catalogue::{sha256_hex, valid_object_name, CatalogueDescriptor, ObjectType};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use http::configure;

/// Default bound of one source package, bytes.
pub const DEFAULT_MAX_PACKAGE_BYTES: usize = 4 << 20;
/// Largest descriptor file read, bytes.
pub const MAX_DESCRIPTOR_BYTES: u64 = 256 * 1024;
/// Hyperty names the node itself serves under `/.well-known/hyperty/`.
pub const RESERVED_HYPERTY_NAMES: &[&str] = &["node"];

/// `[catalogue]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogueSection {
    /// The directory of descriptors; `None`: no catalogue is served.
    pub dir: Option<PathBuf>,
    /// Largest source package loaded, bytes.
    pub max_package_bytes: usize,
}

impl Default for CatalogueSection {
    fn default() -> Self {
        CatalogueSection {
            dir: None,
            max_package_bytes: DEFAULT_MAX_PACKAGE_BYTES,
        }
    }
}

/// Why a catalogue file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The configured directory cannot be listed.
    #[error("catalogue directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be read.
    #[error("catalogue file {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A descriptor does not parse or is malformed.
    #[error("catalogue file {path}: not a valid descriptor: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A descriptor's source package is unusable.
    #[error("catalogue file {path}: source package: {reason}")]
    Package {
        /// The descriptor file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A descriptor states a hash its package does not have.
    #[error("catalogue file {path}: sourceHash {stated} does not match the package ({actual})")]
    Hash {
        /// The descriptor file.
        path: PathBuf,
        /// What the file says.
        stated: String,
        /// What the package hashes to.
        actual: String,
    },
}

/// One served object.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its descriptor (as signed).
    pub descriptor: CatalogueDescriptor,
    /// Its source package.
    pub package: bytes::Bytes,
}

/// The loaded catalogue: (type, name) → entry. Read-only once loaded.
#[derive(Debug, Default)]
pub struct Catalogue {
    entries: BTreeMap<(ObjectType, String), Entry>,
}

impl Catalogue {
    /// Loads `section.dir`; an absent `dir` is an empty catalogue. Bad files are
    /// logged and skipped; an unreadable directory is an error.
    pub fn load(section: &CatalogueSection) -> Result<Catalogue, CatalogueError> {
        let Some(dir) = &section.dir else {
            return Ok(Catalogue::default());
        };
        let (catalogue, refused) = Catalogue::load_dir(dir, section.max_package_bytes)?;
        for e in &refused {
            warn!(error = %e, "catalogue entry refused");
        }
        info!(dir = %dir.display(), served = catalogue.len(), refused = refused.len(), "catalogue loaded");
        Ok(catalogue)
    }

    /// Loads `dir`, answering the catalogue and the refused files.
    pub fn load_dir(
        dir: &Path,
        max_package: usize,
    ) -> Result<(Catalogue, Vec<CatalogueError>), CatalogueError> {
        let dir_err = |source| CatalogueError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::read_dir(dir).map_err(dir_err)?;
        let mut catalogue = Catalogue::default();
        let mut refused = Vec::new();
        for kind in ObjectType::ALL {
            let sub = dir.join(kind.as_str());
            let listing = match std::fs::read_dir(&sub) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(dir_err(e)),
            };
            let mut files: Vec<PathBuf> = listing
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for path in files {
                match load_entry(kind, &path, max_package) {
                    Ok(entry) => {
                        let key = (kind, entry.descriptor.object_name.clone());
                        catalogue.entries.insert(key, entry);
                    }
                    Err(e) => refused.push(e),
                }
            }
        }
        Ok((catalogue, refused))
    }

    /// The entry `name` of `kind`.
    pub fn get(&self, kind: ObjectType, name: &str) -> Option<&Entry> {
        self.entries.get(&(kind, name.to_owned()))
    }

    /// The names of `kind`, sorted.
    pub fn names(&self, kind: ObjectType) -> Vec<&str> {
        self.entries
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.as_str())
            .collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is served.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The path a package is served at.
pub fn package_path(kind: ObjectType, name: &str) -> String {
    format!("/.well-known/{kind}/{name}/sourcePackage")
}

fn load_entry(kind: ObjectType, path: &Path, max_package: usize) -> Result<Entry, CatalogueError> {
    let parse = |reason: String| CatalogueError::Parse {
        path: path.to_owned(),
        reason,
    };
    let package_err = |reason: String| CatalogueError::Package {
        path: path.to_owned(),
        reason,
    };
    let read = |p: &Path, limit: u64| -> Result<Vec<u8>, CatalogueError> {
        let err = |source| CatalogueError::Read {
            path: p.to_owned(),
            source,
        };
        let len = std::fs::metadata(p).map_err(err)?.len();
        if len > limit {
            return Err(CatalogueError::Package {
                path: path.to_owned(),
                reason: format!("{} is {len} bytes, more than {limit}", p.display()),
            });
        }
        std::fs::read(p).map_err(err)
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| valid_object_name(s))
        .ok_or_else(|| parse("the file name is not a valid object name".to_owned()))?;
    let raw = read(path, MAX_DESCRIPTOR_BYTES)?;
    let mut doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw).map_err(|e| parse(e.to_string()))?;
    // the package: a file beside the descriptor, or inline
    let package: Vec<u8> = match (doc.get("sourcePackageURL"), doc.get("sourcePackage")) {
        (Some(serde_json::Value::String(file)), None) => {
            if !valid_object_name(file) {
                return Err(package_err(format!(
                    "sourcePackageURL {file:?} must name a file beside the descriptor"
                )));
            }
            let p = path.with_file_name(file);
            let bytes = read(&p, max_package as u64)?;
            doc.insert(
                "sourcePackageURL".to_owned(),
                serde_json::Value::String(package_path(kind, stem)),
            );
            bytes
        }
        (None, Some(inline)) => {
            let code = inline
                .get("sourceCode")
                .and_then(|c| c.as_str())
                .ok_or_else(|| package_err("sourcePackage.sourceCode is missing".to_owned()))?;
            if code.len() > max_package {
                return Err(package_err(format!(
                    "inline package is {} bytes, more than {max_package}",
                    code.len()
                )));
            }
            code.as_bytes().to_vec()
        }
        _ => {
            return Err(package_err(
                "exactly one of sourcePackageURL (a file name) and sourcePackage".to_owned(),
            ))
        }
    };
    let actual = sha256_hex(&package);
    match doc.get("sourceHash") {
        None => {
            doc.insert(
                "sourceHash".to_owned(),
                serde_json::Value::String(actual.clone()),
            );
        }
        Some(stated) if stated.as_str() == Some(actual.as_str()) => {}
        Some(stated) => {
            return Err(CatalogueError::Hash {
                path: path.to_owned(),
                stated: stated.to_string().chars().take(80).collect(),
                actual,
            })
        }
    }
    let descriptor: CatalogueDescriptor =
        serde_json::from_value(serde_json::Value::Object(doc)).map_err(|e| parse(e.to_string()))?;
    descriptor.check().map_err(|e| parse(e.to_string()))?;
    if descriptor.object_type != kind {
        return Err(parse(format!(
            "objectType {} in the {kind} directory",
            descriptor.object_type
        )));
    }
    if descriptor.object_name != stem {
        return Err(parse(format!(
            "objectName {:?} differs from the file name",
            descriptor.object_name
        )));
    }
    if kind == ObjectType::Hyperty && RESERVED_HYPERTY_NAMES.contains(&stem) {
        return Err(parse(format!("the hyperty name {stem:?} is reserved")));
    }
    Ok(Entry {
        descriptor,
        package: package.into(),
    })
}

#[cfg(test)]
mod tests;
