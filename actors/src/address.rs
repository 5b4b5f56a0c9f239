//! Addresses: every endpoint a message can come from or go to.
//!
//! An [`Address`] is a validated URL of one of the reTHINK address schemes
//! (`hyperty://`, `hyperty-runtime://`/`runtime://`, `domain://`, `domain-idp://`,
//! `user://`/`user-guid://`/`acct://`, `global://`, `hyperty-catalogue://`, `mn:/…`)
//! or of a data-object scheme (`comm://`, `connection://`, … see [`DATA_SCHEMES`] and
//! [`register_data_scheme`]). It is cheap to clone (one shared allocation) and
//! compares and hashes as its text.
//!
//! Typed newtypes ([`HypertyUrl`], [`RuntimeUrl`], [`DomainUrl`], [`DomainIdpUrl`],
//! [`UserUrl`], [`GlobalUrl`], [`DataObjectUrl`]) narrow an address to one kind; each
//! implements `FromStr` and dereferences to [`Address`].
//!
//! ```
//! use hyperty_actors::address::{Address, AddressKind, DataObjectUrl, HypertyUrl};
//!
//! let h: HypertyUrl = "hyperty://example.com/4f1c".parse().unwrap();
//! assert_eq!(h.domain(), Some("example.com"));
//!
//! let obj: DataObjectUrl = "comm://example.com/chat-1".parse().unwrap();
//! assert_eq!(obj.changes().as_str(), "comm://example.com/chat-1/changes");
//! assert_eq!(obj.children().as_str(), "comm://example.com/chat-1/children/");
//!
//! let svc: Address = "domain://msg-node.example.com/address-allocation".parse().unwrap();
//! assert_eq!(svc.kind(), AddressKind::Domain);
//! assert_eq!(svc.routing_domain(), Some("example.com"));
//!
//! assert!("ftp://example.com/x".parse::<Address>().is_err());
//! ```

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Data-object schemes known without registration.
pub const DATA_SCHEMES: &[&str] = &["comm", "connection", "ctxt", "context", "resource", "data"];

/// Longest address accepted, in bytes.
pub const MAX_ADDRESS_LEN: usize = 2048;

/// What kind of endpoint an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    /// `hyperty://<domain>/<id>[/…]`: a hyperty instance (or a channel under it).
    Hyperty,
    /// `hyperty-runtime://` or `runtime://`: a runtime, or a component inside it.
    Runtime,
    /// `domain://<element>.<domain>[/<function>]`: a back-end service.
    Domain,
    /// `domain-idp://<idp>`: an identity provider.
    DomainIdp,
    /// `user://`, `user-guid://` or `acct://`: a user identity.
    User,
    /// `global://…`: the global registry.
    Global,
    /// `hyperty-catalogue://…`: a catalogue entry.
    Catalogue,
    /// `mn:/…`: a messaging-node component such as `mn:/session`.
    Session,
    /// `<scheme>://<domain>/<id>[/changes|/subscription|/children/]`: a data object.
    DataObject,
}

/// The derived channels of a data object (rethink-wire.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `<obj>/changes`: reporter → observers.
    Changes,
    /// `<obj>/subscription`: observers → reporter.
    Subscription,
    /// `<obj>/children/`: one channel for all children.
    Children,
}

impl Channel {
    /// The suffix appended to the object URL.
    pub fn suffix(self) -> &'static str {
        match self {
            Channel::Changes => "/changes",
            Channel::Subscription => "/subscription",
            Channel::Children => "/children/",
        }
    }
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The string is empty.
    #[error("address is empty")]
    Empty,
    /// Longer than [`MAX_ADDRESS_LEN`].
    #[error("address longer than {MAX_ADDRESS_LEN} bytes")]
    TooLong,
    /// No `scheme://` prefix.
    #[error("address has no scheme (expected <scheme>://<domain>/…)")]
    MissingScheme,
    /// The scheme is not a reTHINK scheme nor a registered data-object scheme.
    #[error("unknown address scheme {0:?}")]
    UnknownScheme(String),
    /// Nothing between `://` and the first `/`.
    #[error("address has no domain")]
    MissingDomain,
    /// A character that may not appear in an address.
    #[error("address contains an invalid character {0:?}")]
    InvalidChar(char),
    /// A path was required (e.g. `hyperty://<domain>/<id>`).
    #[error("address needs a path after the domain")]
    MissingPath,
    /// The address is valid but of another kind than the one expected.
    #[error("expected a {expected} address, got {found:?}")]
    WrongKind {
        /// The kind wanted.
        expected: &'static str,
        /// The kind found.
        found: AddressKind,
    },
    /// The address names a channel or sub-path where a bare instance was expected.
    #[error("expected exactly one path segment")]
    ExtraPath,
    /// A `.` or `..` path segment (also percent-encoded): addresses are names, not
    /// paths to resolve, and a dot segment could climb out of a prefix it is checked
    /// against.
    #[error("address contains a dot segment ('.' or '..')")]
    DotSegment,
    /// [`register_data_scheme`] was called for more than [`MAX_EXTRA_SCHEMES`]
    /// schemes, or for a scheme longer than [`MAX_SCHEME_LEN`].
    #[error("too many or too long registered data-object schemes")]
    TooManySchemes,
}

/// Most data-object schemes [`register_data_scheme`] accepts in one process.
pub const MAX_EXTRA_SCHEMES: usize = 1024;

/// Longest scheme [`register_data_scheme`] accepts, in bytes.
pub const MAX_SCHEME_LEN: usize = 64;

fn extra_schemes() -> &'static RwLock<HashSet<String>> {
    static EXTRA: OnceLock<RwLock<HashSet<String>>> = OnceLock::new();
    EXTRA.get_or_init(|| RwLock::new(HashSet::new()))
}

/// Makes `scheme` a valid data-object scheme for every address parsed afterwards in this
/// process (schemes are a vocabulary, like MIME types, so they are process-wide).
///
/// Returns an error if `scheme` is not a syntactically valid scheme, is reserved,
/// is longer than [`MAX_SCHEME_LEN`], or would be the [`MAX_EXTRA_SCHEMES`]th + 1.
pub fn register_data_scheme(scheme: &str) -> Result<(), AddressError> {
    if !valid_scheme(scheme) {
        return Err(AddressError::UnknownScheme(scheme.to_owned()));
    }
    if let Some(found) = reserved_kind(scheme) {
        return Err(AddressError::WrongKind {
            expected: "data-object scheme",
            found,
        });
    }
    if is_data_scheme(scheme) {
        return Ok(());
    }
    if scheme.len() > MAX_SCHEME_LEN {
        return Err(AddressError::TooManySchemes);
    }
    let mut extra = extra_schemes().write().unwrap_or_else(|e| e.into_inner());
    if extra.len() >= MAX_EXTRA_SCHEMES {
        return Err(AddressError::TooManySchemes);
    }
    extra.insert(scheme.to_owned());
    Ok(())
}

/// True if `scheme` is syntactically a scheme (`[a-z][a-z0-9+.-]*`).
pub fn is_valid_scheme(scheme: &str) -> bool {
    valid_scheme(scheme)
}

/// True for the schemes with a fixed meaning (`hyperty`, `runtime`, `domain`, …),
/// which are never data-object schemes.
pub fn is_reserved_scheme(scheme: &str) -> bool {
    reserved_kind(scheme).is_some() || scheme == "mn"
}

/// Refuses `.` and `..` segments, also percent-encoded (`%2e`, `.%2E`, …).
fn check_dot_segments(path: &str) -> Result<(), AddressError> {
    // fast path: no dot and no escape, no dot segment
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return Ok(());
    }
    for seg in path.split('/') {
        if seg.len() > 6 {
            continue;
        }
        let lower = seg.to_ascii_lowercase();
        let decoded = lower.replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(AddressError::DotSegment);
        }
    }
    Ok(())
}

fn reserved_kind(scheme: &str) -> Option<AddressKind> {
    Some(match scheme {
        "hyperty" => AddressKind::Hyperty,
        "hyperty-runtime" | "runtime" => AddressKind::Runtime,
        "domain" => AddressKind::Domain,
        "domain-idp" => AddressKind::DomainIdp,
        "user" | "user-guid" | "acct" => AddressKind::User,
        "global" => AddressKind::Global,
        "hyperty-catalogue" => AddressKind::Catalogue,
        _ => return None,
    })
}

fn is_data_scheme(scheme: &str) -> bool {
    DATA_SCHEMES.contains(&scheme)
        || extra_schemes()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(scheme)
}

fn valid_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '+' | '.' | '-'))
}

fn check_chars(s: &str) -> Result<(), AddressError> {
    // ASCII fast path: addresses are almost always ASCII
    if s.is_ascii() {
        return match s.bytes().find(|&b| b <= b' ' || b == 0x7f) {
            Some(b) => Err(AddressError::InvalidChar(char::from(b))),
            None => Ok(()),
        };
    }
    match s.chars().find(|c| c.is_control() || c.is_whitespace()) {
        Some(c) => Err(AddressError::InvalidChar(c)),
        None => Ok(()),
    }
}

/// Addresses this thread found valid lately, in a small direct-mapped table:
/// routing checks the same few senders and recipients frame after frame. An
/// address's validity depends on nothing but its text (data schemes are only ever
/// added), so a valid one stays valid.
const RECENT_SLOTS: usize = 16;
/// Longer addresses are checked every time.
const RECENT_MAX_LEN: usize = 160;

type Recent = [Option<(Box<str>, AddressKind)>; RECENT_SLOTS];

thread_local! {
    static RECENT: std::cell::RefCell<Recent> =
        const { std::cell::RefCell::new([const { None }; RECENT_SLOTS]) };
}

fn recent_slot(s: &str) -> usize {
    use std::hash::BuildHasher;
    // a hash of the whole text: addresses of one run often differ in one byte
    let h = foldhash::fast::FixedState::with_seed(0x5eed).hash_one(s);
    (h >> 32) as usize % RECENT_SLOTS
}

fn recently_valid(s: &str) -> Option<AddressKind> {
    if s.is_empty() || s.len() > RECENT_MAX_LEN {
        return None;
    }
    RECENT.with(|r| match &r.borrow()[recent_slot(s)] {
        Some((text, kind)) if **text == *s => Some(*kind),
        _ => None,
    })
}

fn remember_valid(s: &str, kind: AddressKind) {
    if s.len() <= RECENT_MAX_LEN {
        RECENT.with(|r| r.borrow_mut()[recent_slot(s)] = Some((s.into(), kind)));
    }
}

/// Validates `s`: its kind and the byte range of its domain.
fn analyse(s: &str) -> Result<(AddressKind, (u16, u16)), AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    if s.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong);
    }
    check_chars(s)?;
    if let Some(path) = s.strip_prefix("mn:/") {
        if path.is_empty() {
            return Err(AddressError::MissingPath);
        }
        check_dot_segments(path)?;
        return Ok((AddressKind::Session, (0, 0)));
    }
    // the scheme ends at the first ':' (schemes never contain one)
    let colon = s.find(':').ok_or(AddressError::MissingScheme)?;
    let (scheme, rest) = match s[colon..].strip_prefix("://") {
        Some(rest) => (&s[..colon], rest),
        None => return Err(AddressError::MissingScheme),
    };
    if !valid_scheme(scheme) {
        return Err(AddressError::UnknownScheme(scheme.to_owned()));
    }
    let kind = match reserved_kind(scheme) {
        Some(k) => k,
        None if is_data_scheme(scheme) => AddressKind::DataObject,
        None => return Err(AddressError::UnknownScheme(scheme.to_owned())),
    };
    let domain_len = rest.find('/').unwrap_or(rest.len());
    if domain_len == 0 {
        return Err(AddressError::MissingDomain);
    }
    if let Some(c) = rest[..domain_len]
        .chars()
        .find(|c| matches!(c, '?' | '#' | '[' | ']' | '\\' | '"' | '<' | '>'))
    {
        return Err(AddressError::InvalidChar(c));
    }
    let path = &rest[domain_len..];
    check_dot_segments(path)?;
    let needs_path = matches!(kind, AddressKind::Hyperty | AddressKind::DataObject);
    if needs_path && path.trim_start_matches('/').is_empty() {
        return Err(AddressError::MissingPath);
    }
    let start = scheme.len() + 3;
    Ok((kind, (start as u16, (start + domain_len) as u16)))
}

/// True if `addr` is `prefix` itself or lies under it (`prefix/…`); a trailing `/`
/// on `prefix` is ignored.
pub fn is_under(addr: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    addr == p || (addr.starts_with(p) && addr.as_bytes().get(p.len()) == Some(&b'/'))
}

/// A validated address. Clones share one allocation.
#[derive(Clone)]
pub struct Address {
    text: Arc<str>,
    kind: AddressKind,
    /// Byte range of the domain (authority) in `text`; empty for `mn:` addresses.
    domain: (u16, u16),
}

impl Address {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        Self::parse_shared(s, None)
    }

    fn parse_shared(s: &str, shared: Option<Arc<str>>) -> Result<Self, AddressError> {
        let (kind, domain) = analyse(s)?;
        Ok(Address {
            text: shared.unwrap_or_else(|| Arc::from(s)),
            kind,
            domain,
        })
    }

    /// Validates `s` without allocating and returns its kind (for hot paths that
    /// route by `&str`).
    pub fn check(s: &str) -> Result<AddressKind, AddressError> {
        if let Some(kind) = recently_valid(s) {
            return Ok(kind);
        }
        let kind = analyse(s)?.0;
        remember_valid(s, kind);
        Ok(kind)
    }

    /// The address text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The shared text (cheap to clone; used as a map key).
    pub fn shared(&self) -> &Arc<str> {
        &self.text
    }

    /// What kind of endpoint this is.
    pub fn kind(&self) -> AddressKind {
        self.kind
    }

    /// The scheme, without `://` (`"mn"` for `mn:/…`).
    pub fn scheme(&self) -> &str {
        match self.kind {
            AddressKind::Session => "mn",
            _ => &self.text[..self.domain.0 as usize - 3],
        }
    }

    /// The domain (authority) part, e.g. `example.com` in `hyperty://example.com/x`.
    /// `None` for `mn:/…` addresses.
    pub fn domain(&self) -> Option<&str> {
        match self.kind {
            AddressKind::Session => None,
            _ => Some(&self.text[self.domain.0 as usize..self.domain.1 as usize]),
        }
    }

    /// The path after the domain, including its leading `/` (may be empty).
    pub fn path(&self) -> &str {
        match self.kind {
            AddressKind::Session => &self.text[3..],
            _ => &self.text[self.domain.1 as usize..],
        }
    }

    /// The service-provider domain a message to this address must be routed to: the
    /// domain with a leading `msg-node.`, `registry.` or `qos.` element stripped for `domain://`
    /// addresses (rethink-wire.md §10 `resolve`). `None` for `global://` and `mn:/`
    /// addresses, which belong to whichever node a runtime is attached to.
    pub fn routing_domain(&self) -> Option<&str> {
        let d = self.domain()?;
        match self.kind {
            AddressKind::Global | AddressKind::Session => None,
            AddressKind::Domain => Some(
                d.strip_prefix("msg-node.")
                    .or_else(|| d.strip_prefix("registry."))
                    .or_else(|| d.strip_prefix("qos."))
                    .unwrap_or(d),
            ),
            _ => Some(d),
        }
    }

    /// True if this address is `prefix` itself or lies under it (`prefix/…`).
    pub fn is_under(&self, prefix: &str) -> bool {
        is_under(self.as_str(), prefix)
    }

    /// For a data-object channel address, the object URL and the channel.
    pub fn channel(&self) -> Option<(&str, Channel)> {
        if self.kind != AddressKind::DataObject {
            return None;
        }
        [Channel::Changes, Channel::Subscription, Channel::Children]
            .into_iter()
            .find_map(|c| self.as_str().strip_suffix(c.suffix()).map(|base| (base, c)))
    }

    /// A new address under this one: `self` + `/` + `segment`.
    pub fn join(&self, segment: &str) -> Result<Address, AddressError> {
        let base = self.as_str().trim_end_matches('/');
        Address::parse(&format!("{base}/{}", segment.trim_start_matches('/')))
    }

    /// Path segments after the domain (empty ones skipped).
    fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').filter(|s| !s.is_empty())
    }
}

impl PartialEq for Address {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Address {}
impl Hash for Address {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}
impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Address {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}
impl Borrow<str> for Address {
    fn borrow(&self) -> &str {
        &self.text
    }
}
impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.text
    }
}
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text)
    }
}
impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}
impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let shared: Arc<str> = Arc::from(s);
        Address::parse_shared(&shared.clone(), Some(shared))
    }
}
impl TryFrom<&str> for Address {
    type Error = AddressError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Address::parse(s)
    }
}
impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}
impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

macro_rules! typed_address {
    ($(#[$doc:meta])* $name:ident, $label:literal, |$a:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Address);

        impl $name {
            /// Narrows an address to this kind.
            pub fn from_address($a: Address) -> Result<Self, AddressError> {
                let ok: Result<(), AddressError> = $check;
                ok.map(|()| $name($a))
            }
            /// The underlying address.
            pub fn address(&self) -> &Address {
                &self.0
            }
            /// Unwraps into the underlying address.
            pub fn into_address(self) -> Address {
                self.0
            }
        }
        impl Deref for $name {
            type Target = Address;
            fn deref(&self) -> &Address {
                &self.0
            }
        }
        impl From<$name> for Address {
            fn from(v: $name) -> Address {
                v.0
            }
        }
        impl TryFrom<Address> for $name {
            type Error = AddressError;
            fn try_from(a: Address) -> Result<Self, AddressError> {
                $name::from_address(a)
            }
        }
        impl FromStr for $name {
            type Err = AddressError;
            fn from_str(s: &str) -> Result<Self, AddressError> {
                $name::from_address(Address::parse(s)?)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", $label, self.0.as_str())
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $name::from_address(Address::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn expect(a: &Address, kind: AddressKind, expected: &'static str) -> Result<(), AddressError> {
    if a.kind() == kind {
        Ok(())
    } else {
        Err(AddressError::WrongKind {
            expected,
            found: a.kind(),
        })
    }
}

fn one_segment(a: &Address) -> Result<(), AddressError> {
    match a.segments().count() {
        0 => Err(AddressError::MissingPath),
        1 if !a.path().ends_with('/') => Ok(()),
        _ => Err(AddressError::ExtraPath),
    }
}

typed_address!(
    /// `hyperty://<domain>/<id>`: one hyperty instance.
    HypertyUrl, "HypertyUrl", |a| expect(&a, AddressKind::Hyperty, "hyperty").and_then(|()| one_segment(&a))
);
typed_address!(
    /// `hyperty-runtime://<domain>/<id>` or `runtime://<domain>/<id>`: a runtime.
    RuntimeUrl, "RuntimeUrl", |a| expect(&a, AddressKind::Runtime, "runtime")
);
typed_address!(
    /// `domain://<element>.<domain>[/<function>]`: a back-end service of a domain.
    DomainUrl, "DomainUrl", |a| expect(&a, AddressKind::Domain, "domain")
);
typed_address!(
    /// `domain-idp://<idp>`: an identity provider.
    DomainIdpUrl, "DomainIdpUrl", |a| expect(&a, AddressKind::DomainIdp, "domain-idp")
);
typed_address!(
    /// `user://<idp>/<id>`, `user-guid://<guid>` or `acct://<sp>/<id>`: a user.
    UserUrl, "UserUrl", |a| expect(&a, AddressKind::User, "user")
);
typed_address!(
    /// `global://registry`: the global registry.
    GlobalUrl, "GlobalUrl", |a| expect(&a, AddressKind::Global, "global")
);
typed_address!(
    /// `<scheme>://<domain>/<id>`: a data object (not one of its channels).
    DataObjectUrl, "DataObjectUrl", |a| expect(&a, AddressKind::DataObject, "data-object").and_then(|()| one_segment(&a))
);

impl HypertyUrl {
    /// A fresh `hyperty://<domain>/<uuid-v4>`.
    pub fn generate(domain: &str) -> Result<Self, AddressError> {
        format!("hyperty://{domain}/{}", uuid::Uuid::new_v4()).parse()
    }

    /// The hyperty's status channel `<url>/status`, where its sandbox reports restarts.
    pub fn status(&self) -> Address {
        self.join("status").unwrap_or_else(|_| self.0.clone())
    }
}

impl RuntimeUrl {
    /// A fresh `hyperty-runtime://<domain>/<uuid-v4>`.
    pub fn generate(domain: &str) -> Result<Self, AddressError> {
        format!("hyperty-runtime://{domain}/{}", uuid::Uuid::new_v4()).parse()
    }

    /// The address of a runtime component, e.g. `component("registry")`.
    pub fn component(&self, name: &str) -> Address {
        self.join(name).unwrap_or_else(|_| self.0.clone())
    }
}

impl DomainUrl {
    /// The service-provider domain (`msg-node.`/`registry.`/`qos.` stripped).
    pub fn service_domain(&self) -> &str {
        self.routing_domain().unwrap_or_default()
    }
}

impl DataObjectUrl {
    /// A fresh `<scheme>://<domain>/<uuid-v4>`.
    pub fn generate(scheme: &str, domain: &str) -> Result<Self, AddressError> {
        format!("{scheme}://{domain}/{}", uuid::Uuid::new_v4()).parse()
    }

    /// The address of one of this object's channels.
    pub fn channel_address(&self, channel: Channel) -> Address {
        let text = format!("{}{}", self.as_str(), channel.suffix());
        Address::try_from(text).unwrap_or_else(|_| self.0.clone())
    }

    /// `<obj>/changes`.
    pub fn changes(&self) -> Address {
        self.channel_address(Channel::Changes)
    }

    /// `<obj>/subscription`.
    pub fn subscription(&self) -> Address {
        self.channel_address(Channel::Subscription)
    }

    /// `<obj>/children/`.
    pub fn children(&self) -> Address {
        self.channel_address(Channel::Children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_valid_address_vouches_for_no_other() {
        let valid = "runtime://d.org/x";
        // an invalid text in the same slot
        let invalid = (0..=32u8)
            .flat_map(|b| (0..64).map(move |i| format!("r{}ntime://d.org/x{i}", char::from(b))))
            .find(|s| recent_slot(s) == recent_slot(valid))
            .expect("some text shares the slot");
        for _ in 0..2 {
            assert_eq!(Address::check(valid), Ok(AddressKind::Runtime));
            assert!(Address::check(&invalid).is_err());
        }
    }

    #[test]
    fn kinds_and_domains() {
        let cases = [
            ("hyperty://d.org/1", AddressKind::Hyperty, Some("d.org")),
            (
                "hyperty-runtime://d.org/rt/registry",
                AddressKind::Runtime,
                Some("d.org"),
            ),
            ("runtime://d.org/abc", AddressKind::Runtime, Some("d.org")),
            (
                "domain://msg-node.d.org/sm",
                AddressKind::Domain,
                Some("msg-node.d.org"),
            ),
            (
                "domain-idp://idp.org",
                AddressKind::DomainIdp,
                Some("idp.org"),
            ),
            (
                "user://google.com/alice",
                AddressKind::User,
                Some("google.com"),
            ),
            ("user-guid://1234", AddressKind::User, Some("1234")),
            ("acct://sp.org/bob", AddressKind::User, Some("sp.org")),
            ("global://registry", AddressKind::Global, Some("registry")),
            (
                "comm://d.org/x/changes",
                AddressKind::DataObject,
                Some("d.org"),
            ),
            ("mn:/session", AddressKind::Session, None),
        ];
        for (s, kind, domain) in cases {
            let a: Address = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(a.kind(), kind, "{s}");
            assert_eq!(a.domain(), domain, "{s}");
            assert_eq!(a.as_str(), s);
        }
    }

    #[test]
    fn routing_domain_strips_service_prefix() {
        let a: Address = "domain://registry.d.org".parse().unwrap();
        assert_eq!(a.routing_domain(), Some("d.org"));
        let a: Address = "domain://qos.d.org".parse().unwrap();
        assert_eq!(a.routing_domain(), Some("d.org"));
        let a: Address = "global://registry/".parse().unwrap();
        assert_eq!(a.routing_domain(), None);
        let a: Address = "hyperty://d.org/1".parse().unwrap();
        assert_eq!(a.routing_domain(), Some("d.org"));
    }

    #[test]
    fn rejects_bad_addresses() {
        assert_eq!(Address::parse(""), Err(AddressError::Empty));
        assert_eq!(Address::parse("hyperty"), Err(AddressError::MissingScheme));
        assert!(matches!(
            Address::parse("ftp://d.org/x"),
            Err(AddressError::UnknownScheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            Address::parse("HYPERTY://d.org/x"),
            Err(AddressError::UnknownScheme(_))
        ));
        assert_eq!(
            Address::parse("hyperty:///x"),
            Err(AddressError::MissingDomain)
        );
        assert_eq!(
            Address::parse("hyperty://d.org"),
            Err(AddressError::MissingPath)
        );
        assert_eq!(
            Address::parse("hyperty://d.org/a b"),
            Err(AddressError::InvalidChar(' '))
        );
        assert_eq!(Address::parse("mn:/"), Err(AddressError::MissingPath));
        assert_eq!(
            Address::parse(&format!("hyperty://d/{}", "x".repeat(MAX_ADDRESS_LEN))),
            Err(AddressError::TooLong)
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        for bad in [
            "hyperty://d.org/..",
            "hyperty://d.org/a/../b",
            "runtime://d.org/rt/./x",
            "runtime://d.org/rt/%2e%2e/victim",
            "runtime://d.org/rt/.%2E",
            "comm://d.org/x/%2E",
            "mn:/../session",
            "hyperty-runtime://d.org/rt/..",
        ] {
            assert_eq!(Address::parse(bad), Err(AddressError::DotSegment), "{bad}");
        }
        for good in [
            "hyperty://d.org/a.b",
            "hyperty://d.org/...",
            "hyperty-catalogue://catalogue.d.org/.well-known/hyperty/x",
            "runtime://d.org/rt/%2e%2e%2e",
            "hyperty://d.org/a%2eb",
        ] {
            assert!(Address::parse(good).is_ok(), "{good}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_parsed_address_has_a_dot_segment(
            segs in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(".".to_owned()),
                    proptest::strategy::Just("..".to_owned()),
                    proptest::strategy::Just("%2e".to_owned()),
                    proptest::strategy::Just("%2E.".to_owned()),
                    "[a-z.%2E]{0,4}",
                ],
                1..5,
            )
        ) {
            let s = format!("hyperty://d.org/{}", segs.join("/"));
            if let Ok(a) = Address::parse(&s) {
                for seg in a.path().split('/') {
                    let d = seg.to_ascii_lowercase().replace("%2e", ".");
                    proptest::prop_assert!(d != "." && d != "..", "{}", s);
                }
            }
        }
    }

    #[test]
    fn scheme_registration_is_bounded() {
        assert_eq!(
            register_data_scheme(&"x".repeat(MAX_SCHEME_LEN + 1)),
            Err(AddressError::TooManySchemes)
        );
        assert!(register_data_scheme("comm").is_ok());
        assert!(is_reserved_scheme("runtime") && is_reserved_scheme("mn"));
        assert!(!is_reserved_scheme("object"));
    }

    #[test]
    fn typed_newtypes_check_kind() {
        assert!("hyperty://d.org/1".parse::<HypertyUrl>().is_ok());
        assert_eq!(
            "hyperty://d.org/1/status".parse::<HypertyUrl>(),
            Err(AddressError::ExtraPath)
        );
        assert!(matches!(
            "runtime://d.org/1".parse::<HypertyUrl>(),
            Err(AddressError::WrongKind { .. })
        ));
        assert!("comm://d.org/1".parse::<DataObjectUrl>().is_ok());
        assert!("comm://d.org/1/changes".parse::<DataObjectUrl>().is_err());
        assert!("user://idp.org/alice".parse::<UserUrl>().is_ok());
        assert!("domain://msg-node.d.org".parse::<DomainUrl>().is_ok());
        assert!("domain-idp://d.org".parse::<DomainIdpUrl>().is_ok());
        assert!("global://registry".parse::<GlobalUrl>().is_ok());
        assert!("hyperty-runtime://d.org/r".parse::<RuntimeUrl>().is_ok());
    }

    #[test]
    fn channels() {
        let o: DataObjectUrl = "connection://d.org/abc".parse().unwrap();
        for ch in [Channel::Changes, Channel::Subscription, Channel::Children] {
            let a = o.channel_address(ch);
            assert_eq!(a.channel(), Some((o.as_str(), ch)));
        }
        let plain: Address = "connection://d.org/abc".parse().unwrap();
        assert_eq!(plain.channel(), None);
    }

    #[test]
    fn registered_scheme_becomes_valid() {
        assert!(Address::parse("tictactoe://d.org/1").is_err());
        register_data_scheme("tictactoe").unwrap();
        assert_eq!(
            Address::parse("tictactoe://d.org/1").unwrap().kind(),
            AddressKind::DataObject
        );
        assert!(register_data_scheme("hyperty").is_err());
        assert!(register_data_scheme("Bad Scheme").is_err());
    }

    #[test]
    fn is_under() {
        let a: Address = "hyperty-runtime://d/rt/registry".parse().unwrap();
        assert!(a.is_under("hyperty-runtime://d/rt"));
        assert!(a.is_under("hyperty-runtime://d/rt/"));
        assert!(!a.is_under("hyperty-runtime://d/r"));
    }

    #[test]
    fn generated_urls_are_unique_and_valid() {
        let a = HypertyUrl::generate("d.org").unwrap();
        let b = HypertyUrl::generate("d.org").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.domain(), Some("d.org"));
        let o = DataObjectUrl::generate("comm", "d.org").unwrap();
        assert_eq!(o.scheme(), "comm");
    }

    #[test]
    fn serde_round_trip() {
        let a: HypertyUrl = "hyperty://d.org/1".parse().unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"hyperty://d.org/1\"");
        let back: HypertyUrl = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<HypertyUrl>("\"user://x/y\"").is_err());
    }
}
