//! Ed25519 signing keys of the identity provider: generation, rotation, the
//! published JWK set, and the key file.
//!
//! The [`KeyRing`] is owned by the provider actor. Its newest key signs; older
//! (retired) keys stay published until every token they signed has expired
//! (`verify_until` = retirement time + the longest token lifetime + clock skew).
//!
//! With a data directory the ring lives in one JSON file, [`KEY_FILE_NAME`],
//! holding each key's PKCS#8 DER (base64), `kid`, and times. It is replaced
//! atomically (temporary file, fsync, rename) and created with mode 0600 on Unix.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::error::IdentityError;

/// Name of the key file inside the provider's data directory.
pub const KEY_FILE_NAME: &str = "idp-signing-keys.json";

/// Largest key file read, bytes.
const MAX_KEY_FILE_LEN: u64 = 1024 * 1024;

/// One public key in JWK form (RFC 8037 `OKP`/`Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type, `OKP`.
    pub kty: String,
    /// Curve, `Ed25519`.
    #[serde(default)]
    pub crv: String,
    /// The public key, base64url without padding.
    #[serde(default)]
    pub x: String,
    /// Key id: the RFC 7638 thumbprint.
    #[serde(default)]
    pub kid: String,
    /// `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl Jwk {
    fn ed25519(public: &VerifyingKey) -> Jwk {
        let x = URL_SAFE_NO_PAD.encode(public.as_bytes());
        Jwk {
            kid: thumbprint(&x),
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x,
            alg: Some("EdDSA".to_owned()),
            key_use: Some("sig".to_owned()),
        }
    }

    /// The verification key, if this JWK is a valid Ed25519 signing key with a
    /// `kid`. Anything else (RSA, EC, HMAC secrets, keys for encryption, points
    /// off the curve, wrong lengths) is refused.
    pub fn decoding_key(&self) -> Result<DecodingKey, IdentityError> {
        let unusable = || IdentityError::InvalidToken("unusable key in the provider's key set");
        if self.kty != "OKP"
            || self.crv != "Ed25519"
            || self.kid.is_empty()
            || self.alg.as_deref().is_some_and(|a| a != "EdDSA")
            || self.key_use.as_deref().is_some_and(|u| u != "sig")
        {
            return Err(unusable());
        }
        let bytes = URL_SAFE_NO_PAD.decode(&self.x).map_err(|_| unusable())?;
        let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| unusable())?;
        VerifyingKey::from_bytes(&raw).map_err(|_| unusable())?;
        DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(raw)).map_err(|_| unusable())
    }
}

/// A JWK set, as served at `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// RFC 7638 thumbprint of an Ed25519 key with base64url `x`.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A published verification key.
#[derive(Clone)]
pub(crate) struct PublicKey {
    pub(crate) decoding: DecodingKey,
    pub(crate) jwk: Jwk,
    /// `None` for the current key; tokens of a retired key verify until then.
    pub(crate) verify_until: Option<u64>,
}

/// The verification keys, by `kid`, oldest first in `order`.
#[derive(Clone, Default)]
pub(crate) struct PublicKeys {
    pub(crate) by_kid: HashMap<String, PublicKey>,
    order: Vec<String>,
}

impl PublicKeys {
    /// The key `kid` if it is still valid at `now`.
    pub(crate) fn get(&self, kid: &str, now: u64) -> Option<&DecodingKey> {
        self.by_kid
            .get(kid)
            .filter(|k| k.verify_until.is_none_or(|until| now <= until))
            .map(|k| &k.decoding)
    }

    /// The JWK set of the keys still valid at `now`.
    pub(crate) fn jwks(&self, now: u64) -> JwkSet {
        JwkSet {
            keys: self
                .order
                .iter()
                .filter_map(|kid| self.by_kid.get(kid))
                .filter(|k| k.verify_until.is_none_or(|until| now <= until))
                .map(|k| k.jwk.clone())
                .collect(),
        }
    }
}

pub(crate) struct KeyEntry {
    pub(crate) kid: String,
    signing: SigningKey,
    pub(crate) encoding: EncodingKey,
    created: u64,
    retired: Option<u64>,
    verify_until: Option<u64>,
}

impl KeyEntry {
    fn new(signing: SigningKey, created: u64) -> Result<KeyEntry, IdentityError> {
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| IdentityError::Internal("cannot encode a signing key"))?;
        let jwk = Jwk::ed25519(&signing.verifying_key());
        Ok(KeyEntry {
            kid: jwk.kid,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            signing,
            created,
            retired: None,
            verify_until: None,
        })
    }

    fn generate(now: u64) -> Result<KeyEntry, IdentityError> {
        KeyEntry::new(SigningKey::generate(&mut rand_core::OsRng), now)
    }

    fn public(&self) -> Result<PublicKey, IdentityError> {
        let jwk = Jwk::ed25519(&self.signing.verifying_key());
        Ok(PublicKey {
            decoding: jwk.decoding_key()?,
            jwk,
            verify_until: self.verify_until,
        })
    }
}

/// The provider's keys. The last entry is the current signing key; the others are
/// retired and kept for verification only.
pub(crate) struct KeyRing {
    entries: Vec<KeyEntry>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field(
                "kids",
                &self.entries.iter().map(|e| &e.kid).collect::<Vec<_>>(),
            )
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created: u64,
    #[serde(default)]
    retired: Option<u64>,
    #[serde(default)]
    verify_until: Option<u64>,
    /// PKCS#8 DER, standard base64.
    pkcs8: String,
}

fn store_err(what: &str, e: impl std::fmt::Display) -> IdentityError {
    IdentityError::KeyStore(format!("{what}: {e}"))
}

impl KeyRing {
    /// Loads the ring from `data_dir`, or makes (and saves) a new one. Without a
    /// directory the ring lives in memory only.
    pub(crate) fn open(data_dir: Option<&Path>, now: u64) -> Result<KeyRing, IdentityError> {
        let Some(dir) = data_dir else {
            return Ok(KeyRing {
                entries: vec![KeyEntry::generate(now)?],
                path: None,
            });
        };
        crate::private_files::create_private_dir(dir)
            .map_err(|e| store_err("cannot create the data directory", e))?;
        let path = dir.join(KEY_FILE_NAME);
        let mut ring = KeyRing {
            entries: Vec::new(),
            path: Some(path.clone()),
        };
        if path.exists() {
            ring.entries = load(&path)?;
            ring.prune(now);
            info!(path = %path.display(), keys = ring.entries.len(), "identity provider keys loaded");
        }
        if ring.entries.last().is_none_or(|e| e.retired.is_some()) {
            ring.entries.push(KeyEntry::generate(now)?);
            ring.save()?;
            info!(path = %path.display(), "identity provider signing key generated");
        }
        Ok(ring)
    }

    /// The current signing key.
    pub(crate) fn current(&self) -> Result<&KeyEntry, IdentityError> {
        self.entries
            .last()
            .ok_or(IdentityError::Internal("no signing key"))
    }

    /// Number of keys held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Retires the current key (valid for `keep_secs` more) and makes a new one.
    /// Saves before it takes effect; answers the new `kid`.
    pub(crate) fn rotate(
        &mut self,
        now: u64,
        keep_secs: u64,
        max_keys: usize,
    ) -> Result<String, IdentityError> {
        self.prune(now);
        if self.entries.len() >= max_keys {
            return Err(IdentityError::Full {
                table: "the signing key ring",
                limit: max_keys,
            });
        }
        let fresh = KeyEntry::generate(now)?;
        let kid = fresh.kid.clone();
        let previous = self.entries.len();
        if let Some(cur) = self.entries.last_mut() {
            cur.retired = Some(now);
            cur.verify_until = Some(now.saturating_add(keep_secs));
        }
        self.entries.push(fresh);
        if let Err(e) = self.save() {
            // undo: the file still holds the old ring
            self.entries.truncate(previous);
            if let Some(cur) = self.entries.last_mut() {
                cur.retired = None;
                cur.verify_until = None;
            }
            return Err(e);
        }
        Ok(kid)
    }

    /// Drops retired keys whose tokens have all expired; answers whether any went.
    pub(crate) fn prune(&mut self, now: u64) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|e| e.verify_until.is_none_or(|until| now <= until));
        before != self.entries.len()
    }

    /// Saves the ring if it has a file (best effort after a prune).
    pub(crate) fn save_quietly(&self) {
        if let Err(e) = self.save() {
            warn!(error = %e, "could not save the identity provider keys");
        }
    }

    /// The verification keys.
    pub(crate) fn public_keys(&self) -> Result<PublicKeys, IdentityError> {
        let mut keys = PublicKeys::default();
        for e in &self.entries {
            keys.order.push(e.kid.clone());
            keys.by_kid.insert(e.kid.clone(), e.public()?);
        }
        Ok(keys)
    }

    fn save(&self) -> Result<(), IdentityError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = self.encode()?;
        write_atomically(path, &text).map_err(|e| store_err("cannot write the key file", e))
    }

    /// The ring in its key-file form (also the form the nodes of a domain share).
    pub(crate) fn encode(&self) -> Result<Vec<u8>, IdentityError> {
        let mut keys = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let der = e
                .signing
                .to_pkcs8_der()
                .map_err(|_| IdentityError::Internal("cannot encode a signing key"))?;
            keys.push(StoredKey {
                kid: e.kid.clone(),
                created: e.created,
                retired: e.retired,
                verify_until: e.verify_until,
                pkcs8: STANDARD.encode(der.as_bytes()),
            });
        }
        serde_json::to_vec_pretty(&KeyFile { version: 1, keys })
            .map_err(|e| store_err("cannot encode the key file", e))
    }

    /// A ring of `bytes` (in [`KeyRing::encode`] form) in memory only: the
    /// domain's shared set, to rotate before it is shared again.
    pub(crate) fn from_shared(bytes: &[u8]) -> Result<KeyRing, IdentityError> {
        let mut ring = KeyRing {
            entries: Vec::new(),
            path: None,
        };
        ring.adopt(bytes)?;
        Ok(ring)
    }

    /// Takes the keys of `bytes` (a ring in [`KeyRing::encode`] form, e.g. the
    /// domain's shared one) in place of its own, and saves them if it has a file.
    pub(crate) fn adopt(&mut self, bytes: &[u8]) -> Result<(), IdentityError> {
        let entries = decode(bytes)?;
        if entries.last().is_none_or(|e| e.retired.is_some()) {
            return Err(IdentityError::KeyStore(
                "the shared key set has no signing key".to_owned(),
            ));
        }
        self.entries = entries;
        self.save_quietly();
        Ok(())
    }
}

fn load(path: &Path) -> Result<Vec<KeyEntry>, IdentityError> {
    let meta = fs::metadata(path).map_err(|e| store_err("cannot read the key file", e))?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(IdentityError::KeyStore(
            "the key file is too large".to_owned(),
        ));
    }
    warn_if_readable_by_others(path, &meta);
    let bytes = fs::read(path).map_err(|e| store_err("cannot read the key file", e))?;
    decode(&bytes)
}

fn decode(bytes: &[u8]) -> Result<Vec<KeyEntry>, IdentityError> {
    // serde errors could quote key material: report the position only
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| {
        IdentityError::KeyStore(format!(
            "the key file is not valid (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if file.version != 1 {
        return Err(IdentityError::KeyStore(format!(
            "unsupported key file version {}",
            file.version
        )));
    }
    let mut entries = Vec::with_capacity(file.keys.len());
    for k in file.keys {
        let der = STANDARD
            .decode(k.pkcs8.as_bytes())
            .map_err(|_| IdentityError::KeyStore(format!("key {} is not base64", k.kid)))?;
        let signing = SigningKey::from_pkcs8_der(&der)
            .map_err(|_| IdentityError::KeyStore(format!("key {} is not Ed25519 PKCS#8", k.kid)))?;
        let mut entry = KeyEntry::new(signing, k.created)?;
        if entry.kid != k.kid {
            return Err(IdentityError::KeyStore(format!(
                "key {} does not match its kid",
                k.kid
            )));
        }
        entry.retired = k.retired;
        entry.verify_until = k.verify_until;
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, meta: &fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o077 != 0 {
        warn!(path = %path.display(), "the identity provider key file is readable by other users");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path, _: &fs::Metadata) {}

/// Replaces `path` with `bytes`: a private temporary file in the same directory,
/// flushed to disk, then renamed over the old file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{KEY_FILE_NAME}.{}.tmp", uuid::Uuid::new_v4()));
    let written = open_private(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwk_round_trip_and_refusals() {
        let key = KeyEntry::generate(1).unwrap();
        let jwk = key.public().unwrap().jwk;
        assert_eq!(jwk.kid, key.kid);
        assert!(jwk.decoding_key().is_ok());
        let bad = [
            Jwk {
                kty: "RSA".into(),
                ..jwk.clone()
            },
            Jwk {
                crv: "X25519".into(),
                ..jwk.clone()
            },
            Jwk {
                x: "AAAA".into(),
                ..jwk.clone()
            },
            Jwk {
                x: "!!".into(),
                ..jwk.clone()
            },
            Jwk {
                alg: Some("HS256".into()),
                ..jwk.clone()
            },
            Jwk {
                key_use: Some("enc".into()),
                ..jwk.clone()
            },
            Jwk {
                kid: String::new(),
                ..jwk.clone()
            },
        ];
        for j in bad {
            assert!(j.decoding_key().is_err(), "{j:?}");
        }
    }

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037 appendix A.3
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rotation_keeps_old_keys_until_their_tokens_expire() {
        let mut ring = KeyRing::open(None, 100).unwrap();
        let old = ring.current().unwrap().kid.clone();
        let new = ring.rotate(200, 50, 8).unwrap();
        assert_ne!(old, new);
        let keys = ring.public_keys().unwrap();
        assert!(keys.get(&old, 250).is_some());
        assert!(keys.get(&old, 251).is_none());
        assert_eq!(keys.jwks(250).keys.len(), 2);
        assert_eq!(keys.jwks(251).keys.len(), 1);
        assert!(ring.prune(251));
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.current().unwrap().kid, new);
    }

    #[test]
    fn rotation_is_bounded() {
        let mut ring = KeyRing::open(None, 0).unwrap();
        ring.rotate(1, 1000, 3).unwrap();
        ring.rotate(2, 1000, 3).unwrap();
        assert!(matches!(
            ring.rotate(3, 1000, 3),
            Err(IdentityError::Full { limit: 3, .. })
        ));
    }

    #[test]
    fn persisted_ring_is_reloaded_and_private() {
        let dir = std::env::temp_dir().join(format!("hyperty-keys-{}", uuid::Uuid::new_v4()));
        let first = KeyRing::open(Some(&dir), 10).unwrap();
        let kid = first.current().unwrap().kid.clone();
        let again = KeyRing::open(Some(&dir), 20).unwrap();
        assert_eq!(again.current().unwrap().kid, kid);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(KEY_FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // no temporary files left behind
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // a rotation is saved: both keys come back, the new one current
        let mut ring = again;
        let new = ring.rotate(30, 100, 8).unwrap();
        let reopened = KeyRing::open(Some(&dir), 40).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.current().unwrap().kid, new);
        assert!(reopened.public_keys().unwrap().get(&kid, 130).is_some());
        // once the retired key's tokens have expired it is dropped at load
        let later = KeyRing::open(Some(&dir), 131).unwrap();
        assert_eq!(later.len(), 1);
        fs::write(dir.join(KEY_FILE_NAME), b"{not json").unwrap();
        assert!(matches!(
            KeyRing::open(Some(&dir), 30),
            Err(IdentityError::KeyStore(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
