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
//! **Reload without a restart.** Every `reload_interval_ms` (default 2 s; 0:
//! never) the node looks at the directory's files (names, sizes, modification
//! times); when anything changed it reads the whole directory again
//! ([`Catalogue::reload`], which an embedding application may also call). The
//! new catalogue replaces the served one only when every file in it is good: a
//! bad file (or an unreadable directory) keeps the previous catalogue served,
//! logs the error at `warn` and keeps it in [`Catalogue::last_error`] until a
//! reload succeeds. A changed descriptor is served, signed, from the next
//! request on; a runtime's `check_for_update` then finds its new version.
//!
//! | route | answer |
//! |---|---|
//! | `GET /.well-known/<type>` | 200 `["name", …]` |
//! | `GET /.well-known/<type>/<name>` | 200 the descriptor + `signature`; 404 `{code, description}` |
//! | `GET /.well-known/<type>/<name>/sourcePackage` | 200 the package bytes; 404 |

mod http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use hyperty_actors::catalogue::{sha256_hex, valid_object_name, CatalogueDescriptor, ObjectType};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use http::configure;

/// Default bound of one source package, bytes.
pub const DEFAULT_MAX_PACKAGE_BYTES: usize = 4 << 20;
/// Default interval between two looks at the catalogue directory, ms.
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 2000;
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
    /// How often the directory is checked for changes, ms (0: never).
    pub reload_interval_ms: u64,
}

impl Default for CatalogueSection {
    fn default() -> Self {
        CatalogueSection {
            dir: None,
            max_package_bytes: DEFAULT_MAX_PACKAGE_BYTES,
            reload_interval_ms: DEFAULT_RELOAD_INTERVAL_MS,
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
    /// A reload found bad files: the previous catalogue stays served.
    #[error("catalogue reload refused, the previous catalogue stays served: {}", .0.join("; "))]
    Refused(Vec<String>),
}

/// One served object.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its descriptor (as signed).
    pub descriptor: CatalogueDescriptor,
    /// Its source package.
    pub package: bytes::Bytes,
}

type Entries = BTreeMap<(ObjectType, String), Entry>;

/// What was last seen of the directory: each file's path, size and mtime.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The loaded catalogue: (type, name) → entry, replaced whole by a good reload.
#[derive(Debug, Default)]
pub struct Catalogue {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: RwLock<Arc<Entries>>,
    /// The directory and the package bound, when there is one.
    source: Option<(PathBuf, usize)>,
    seen: Mutex<Fingerprint>,
    last_error: Mutex<Option<String>>,
}

impl Catalogue {
    /// Loads `section.dir`; an absent `dir` is an empty catalogue. Bad files are
    /// logged and skipped; an unreadable directory is an error. Inside a tokio
    /// runtime, with a `reload_interval_ms`, the directory is then watched for
    /// as long as the catalogue lives.
    pub fn load(section: &CatalogueSection) -> Result<Catalogue, CatalogueError> {
        let Some(dir) = &section.dir else {
            return Ok(Catalogue::default());
        };
        let seen = fingerprint(dir);
        let (entries, refused) = load_dir(dir, section.max_package_bytes)?;
        for e in &refused {
            warn!(error = %e, "catalogue entry refused");
        }
        info!(dir = %dir.display(), served = entries.len(), refused = refused.len(), "catalogue loaded");
        let catalogue = Catalogue {
            inner: Arc::new(Inner {
                entries: RwLock::new(Arc::new(entries)),
                source: Some((dir.clone(), section.max_package_bytes)),
                seen: Mutex::new(seen),
                last_error: Mutex::new(None),
            }),
        };
        if section.reload_interval_ms > 0 && tokio::runtime::Handle::try_current().is_ok() {
            watch(
                Arc::downgrade(&catalogue.inner),
                Duration::from_millis(section.reload_interval_ms),
            );
        }
        Ok(catalogue)
    }

    /// Loads `dir`, answering the catalogue and the refused files.
    pub fn load_dir(
        dir: &Path,
        max_package: usize,
    ) -> Result<(Catalogue, Vec<CatalogueError>), CatalogueError> {
        let (entries, refused) = load_dir(dir, max_package)?;
        let catalogue = Catalogue {
            inner: Arc::new(Inner {
                entries: RwLock::new(Arc::new(entries)),
                ..Inner::default()
            }),
        };
        Ok((catalogue, refused))
    }

    /// Reads the directory again. Served from now on only if every file is good;
    /// otherwise the previous catalogue stays and the error is answered (and kept
    /// in [`Catalogue::last_error`]). Answers the number of entries served.
    pub fn reload(&self) -> Result<usize, CatalogueError> {
        self.inner.reload()
    }

    /// Why the last reload was refused, until one succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn entries(&self) -> Arc<Entries> {
        self.inner
            .entries
            .read()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// The entry `name` of `kind`.
    pub fn get(&self, kind: ObjectType, name: &str) -> Option<Entry> {
        self.entries().get(&(kind, name.to_owned())).cloned()
    }

    /// The names of `kind`, sorted.
    pub fn names(&self, kind: ObjectType) -> Vec<String> {
        self.entries()
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when nothing is served.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

impl Inner {
    fn reload(&self) -> Result<usize, CatalogueError> {
        let Some((dir, max_package)) = &self.source else {
            return Ok(0);
        };
        let _span = tracing::info_span!("catalogue.reload", dir = %dir.display()).entered();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = fingerprint(dir);
        }
        let loaded = load_dir(dir, *max_package).and_then(|(entries, refused)| {
            if refused.is_empty() {
                Ok(entries)
            } else {
                Err(CatalogueError::Refused(
                    refused.iter().map(ToString::to_string).collect(),
                ))
            }
        });
        let result = match loaded {
            Ok(entries) => {
                let served = entries.len();
                if let Ok(mut e) = self.entries.write() {
                    *e = Arc::new(entries);
                }
                info!(served, "catalogue reloaded");
                Ok(served)
            }
            Err(e) => {
                warn!(error = %e, "catalogue reload refused; the previous catalogue stays served");
                Err(e)
            }
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = result.as_ref().err().map(ToString::to_string);
        }
        result
    }

    /// Reloads when the directory's files changed since last seen.
    fn reload_if_changed(&self) {
        let Some((dir, _)) = &self.source else { return };
        let now = fingerprint(dir);
        let changed = self.seen.lock().map(|s| *s != now).unwrap_or(false);
        if changed {
            let _ = self.reload();
        }
    }
}

/// Looks at the catalogue every `every` while it lives.
fn watch(inner: Weak<Inner>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            // stat calls and, on a change, file reads: off the server's threads
            let _ = tokio::task::spawn_blocking(move || inner.reload_if_changed()).await;
        }
    });
}

/// The files under `dir` (one level of object-type directories), with their
/// sizes and modification times, sorted.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p) {
            out.push((p, m.len(), m.modified().ok()));
        }
    };
    for kind in ObjectType::ALL {
        if let Ok(listing) = std::fs::read_dir(dir.join(kind.as_str())) {
            listing.filter_map(|e| e.ok()).for_each(|e| add(e.path()));
        }
    }
    out.sort();
    out
}

/// Loads `dir`: its entries and the refused files.
fn load_dir(
    dir: &Path,
    max_package: usize,
) -> Result<(Entries, Vec<CatalogueError>), CatalogueError> {
    let dir_err = |source| CatalogueError::Dir {
        path: dir.to_owned(),
        source,
    };
    std::fs::read_dir(dir).map_err(dir_err)?;
    let mut entries = Entries::new();
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
                    entries.insert(key, entry);
                }
                Err(e) => refused.push(e),
            }
        }
    }
    Ok((entries, refused))
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
