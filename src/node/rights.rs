//! Who may speak as which address: the node's rules, as plain functions.
//!
//! A session may send from
//!
//! * its **runtime URL** and everything under it: `runtime://<D>/<id>` or
//!   `hyperty-runtime://<D>/<id>` of the node's own domain (a path below the domain
//!   is required: `runtime://<D>` would own every runtime of the domain);
//! * its **stub URLs**: `hyperty-runtime://<D>/…` URLs of the node's domain that
//!   the runtime's protocol stub speaks from (the reference Vert.x stub sends from
//!   `hyperty-runtime://<D>/protostub/<n>/…`), announced at `open` in
//!   `body.stubURL` or bound at first use when no session holds them, for the
//!   session's lifetime ([`stub_url`] says which prefix is bound);
//! * the **addresses allocated** to it (`domain://msg-node.<D>/address-allocation`,
//!   including re-claims, see [`Holders`](super::holders::Holders)), and the
//!   derived channels of an allocated data object ([`object_of_channel`]): its
//!   reporter's runtime answers subscriptions from `<obj>/subscription` and
//!   children from `<obj>/children/` (rethink-wire.md §9).
//!
//! Nothing else grants sending rights — subscribing to an address does not.
//!
//! A new `open` for a runtime URL that still has a session replaces it
//! ([`may_replace`]) when the opener is the same identity, or the device whose
//! runtime URL it is, or the old session was anonymous (`auth.mode = optional`).

use hyperty_actors::address::{Address, AddressKind};

/// Why a URL cannot be a session's runtime or stub URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// Not a runtime URL, or without a path below the domain (400).
    #[error("{0}")]
    Malformed(String),
    /// A runtime URL of another domain (403).
    #[error("{0}")]
    ForeignDomain(String),
}

/// Checks the runtime URL of an `open` for a node of `domain`.
pub fn check_runtime_url(url: &str, domain: &str) -> Result<(), UrlRefused> {
    let a = match Address::parse(url) {
        Ok(a) if a.kind() == AddressKind::Runtime => a,
        _ => {
            return Err(UrlRefused::Malformed(
                "open must come from a runtime URL (runtime:// or hyperty-runtime://)".into(),
            ))
        }
    };
    if a.path().trim_matches('/').is_empty() {
        return Err(UrlRefused::Malformed(format!(
            "{url} names no runtime: a runtime URL needs a path below the domain"
        )));
    }
    if a.domain() != Some(domain) {
        return Err(UrlRefused::ForeignDomain(format!(
            "this node serves runtimes of {domain}, not {url}"
        )));
    }
    Ok(())
}

/// The stub URL a frame `from` belongs to, if `from` may be a stub URL of a session
/// of a node of `domain`: `hyperty-runtime://<D>/protostub/<n>` for the reference
/// protostubs' `…/protostub/<n>/…`, otherwise `hyperty-runtime://<D>/<first
/// segment>` (a runtime-shaped URL).
pub fn stub_url(from: &str, domain: &str) -> Option<String> {
    let a = Address::parse(from).ok()?;
    if a.scheme() != "hyperty-runtime" || a.domain() != Some(domain) {
        return None;
    }
    let mut segs = a.path().split('/').filter(|s| !s.is_empty());
    let first = segs.next()?;
    match (first, segs.next()) {
        ("protostub", Some(n)) => Some(format!("hyperty-runtime://{domain}/protostub/{n}")),
        ("protostub", None) => None,
        _ => Some(format!("hyperty-runtime://{domain}/{first}")),
    }
}

/// The data object whose derived channel `addr` is (`<obj>/changes`,
/// `<obj>/subscription`, `<obj>/children/`), if it is one.
pub fn object_of_channel(addr: &str) -> Option<&str> {
    ["/changes", "/subscription", "/children/"]
        .iter()
        .find_map(|c| addr.strip_suffix(c))
        .filter(|base| !base.is_empty())
}

/// True if a session of `new` may replace the session of `old` on `runtime`.
pub fn may_replace(old: Option<&str>, new: Option<&str>, runtime: &str) -> bool {
    match (old, new) {
        (None, _) => true,
        (Some(o), Some(n)) => o == n || n == runtime,
        (Some(_), None) => false,
    }
}

/// True if `identity` is listed in `managers` (`"*"`: any authenticated identity).
pub fn is_manager(managers: &[String], identity: Option<&str>) -> bool {
    identity.is_some_and(|w| managers.iter().any(|m| m == w || m == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_urls_need_a_path_and_the_nodes_domain() {
        assert!(check_runtime_url("runtime://d.org/rt", "d.org").is_ok());
        assert!(check_runtime_url("hyperty-runtime://d.org/rt/x", "d.org").is_ok());
        for bare in [
            "runtime://d.org",
            "runtime://d.org/",
            "hyperty-runtime://d.org/",
            "hyperty-runtime://d.org//",
            "hyperty://d.org/x",
        ] {
            assert!(
                matches!(
                    check_runtime_url(bare, "d.org"),
                    Err(UrlRefused::Malformed(_))
                ),
                "{bare}"
            );
        }
        assert!(matches!(
            check_runtime_url("runtime://evil.org/rt", "d.org"),
            Err(UrlRefused::ForeignDomain(_))
        ));
        assert!(matches!(
            check_runtime_url("runtime://d.org.evil/rt", "d.org"),
            Err(UrlRefused::ForeignDomain(_))
        ));
    }

    #[test]
    fn stub_urls() {
        assert_eq!(
            stub_url("hyperty-runtime://d.org/protostub/3/registry", "d.org").as_deref(),
            Some("hyperty-runtime://d.org/protostub/3")
        );
        assert_eq!(
            stub_url("hyperty-runtime://d.org/abc/sm", "d.org").as_deref(),
            Some("hyperty-runtime://d.org/abc")
        );
        assert_eq!(stub_url("hyperty-runtime://d.org/protostub", "d.org"), None);
        assert_eq!(stub_url("hyperty-runtime://e.org/abc", "d.org"), None);
        assert_eq!(stub_url("runtime://d.org/abc", "d.org"), None);
        assert_eq!(stub_url("hyperty://d.org/abc", "d.org"), None);
    }

    #[test]
    fn object_channels() {
        assert_eq!(
            object_of_channel("comm://d/1/subscription"),
            Some("comm://d/1")
        );
        assert_eq!(
            object_of_channel("comm://d/1/children/"),
            Some("comm://d/1")
        );
        assert_eq!(object_of_channel("comm://d/1/changes"), Some("comm://d/1"));
        assert_eq!(object_of_channel("comm://d/1"), None);
        assert_eq!(object_of_channel("comm://d/1/children/x"), None);
    }

    #[test]
    fn replacement_and_managers() {
        let rt = "hyperty-runtime://d/dev";
        assert!(may_replace(None, None, rt));
        assert!(may_replace(None, Some("user://d/a"), rt));
        assert!(may_replace(Some("user://d/a"), Some("user://d/a"), rt));
        assert!(may_replace(Some("user://d/a"), Some(rt), rt));
        assert!(!may_replace(Some("user://d/a"), Some("user://d/b"), rt));
        assert!(!may_replace(Some("user://d/a"), None, rt));
        let m = vec!["user://d/admin".to_owned()];
        assert!(is_manager(&m, Some("user://d/admin")));
        assert!(!is_manager(&m, Some("user://d/bob")));
        assert!(!is_manager(&m, None));
        assert!(is_manager(&["*".to_owned()], Some("user://d/bob")));
        assert!(!is_manager(&["*".to_owned()], None));
    }
}
