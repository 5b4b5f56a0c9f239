//! Who asks: the [`Caller`] of a registry request, and the rules its writes are
//! checked against. Plain functions over plain data; the logic in `core.rs` calls
//! them before it touches the table.

use std::fmt;
use std::sync::Arc;

use super::error::DomainRegistryError;
use super::model::Record;
use super::request::Patch;

type Result<T> = std::result::Result<T, DomainRegistryError>;

/// The session a [`RegistryRequest`](super::RegistryRequest) comes from, as the
/// node knows it (never as the message says).
///
/// * Reads are open to every caller: discovery is the registry's point.
/// * Writes (`create`, `update`, `delete`) are checked:
///   - the entry's URL (and a data object's `reporter`) must be an address the
///     session owns ([`owns`](Self::owns));
///   - an authenticated caller registers hyperties only under its own identity
///     (`user` = [`identity`](Self::identity));
///   - only the caller that registered an entry — the same identity, or for an
///     anonymous caller the same runtime — may replace, update or delete it;
///   - [`max_entries_per_user`](super::DomainRegistryConfig::max_entries_per_user)
///     counts per identity (per runtime for anonymous callers), whatever users
///     the entries name.
///
///   A refused write answers 403 and changes nothing.
///
/// ```
/// use std::sync::Arc;
/// use hyperty::domain_registry::Caller;
///
/// let alice = Caller {
///     identity: Some(Arc::from("user://example.com/alice")),
///     runtime: Some(Arc::from("runtime://example.com/rt-1")),
///     owns: Arc::new(|url: &str| url.starts_with("hyperty://example.com/a-")),
/// };
/// assert!((alice.owns)("hyperty://example.com/a-1"));
/// ```
#[derive(Clone)]
pub struct Caller {
    /// The session's authenticated identity (a user or device URL), or `None`
    /// for an anonymous session (`auth.mode = "optional"`).
    pub identity: Option<Arc<str>>,
    /// The session's runtime URL: what the entries and caps of an anonymous
    /// caller are held under.
    pub runtime: Option<Arc<str>>,
    /// True for the addresses the session may act for (its runtime URL's subtree
    /// and the addresses allocated to it).
    pub owns: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("identity", &self.identity)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

fn forbidden(why: String) -> DomainRegistryError {
    DomainRegistryError::Forbidden(why)
}

impl Caller {
    /// The key the caller's entries are held and counted under: its identity, or
    /// its runtime URL if it is anonymous.
    pub(crate) fn holder(&self) -> Result<&str> {
        self.identity
            .as_deref()
            .or(self.runtime.as_deref())
            .ok_or_else(|| {
                forbidden("an anonymous session without a runtime URL may not write".to_owned())
            })
    }

    fn check_owns(&self, field: &str, url: &str) -> Result<()> {
        if (self.owns)(url) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "{field} {url} is not an address of this session"
            )))
        }
    }

    fn check_user(&self, field: &str, user: &str) -> Result<()> {
        match self.identity.as_deref() {
            Some(id) if id != user => Err(forbidden(format!(
                "{field} must be the session's identity {id}, not {user}"
            ))),
            _ => Ok(()),
        }
    }

    /// May the caller, holding entries as `holder`, change the entry `held_by`
    /// holds at `url`?
    fn check_holder(holder: &str, url: &str, held_by: Option<&str>) -> Result<()> {
        match held_by {
            Some(h) if h != holder => {
                Err(forbidden(format!("{url} is registered by another session")))
            }
            _ => Ok(()),
        }
    }

    /// Checks a `create` of `record` over the entry `held_by` holds (if any);
    /// returns the holder to register it under.
    pub(crate) fn may_create(&self, record: &Record, held_by: Option<&str>) -> Result<&str> {
        let holder = self.holder()?;
        self.check_owns("value.url", record.url())?;
        match record {
            Record::Hyperty(h) => self.check_user("value.user", &h.user)?,
            Record::DataObject(d) => self.check_owns("value.reporter", &d.reporter)?,
        }
        Self::check_holder(holder, record.url(), held_by)?;
        Ok(holder)
    }

    /// Checks an `update` of the entry `held_by` holds at `url` with `patch`;
    /// returns the holder to keep it under.
    pub(crate) fn may_update(&self, url: &str, held_by: &str, patch: &Patch) -> Result<&str> {
        let holder = self.holder()?;
        Self::check_holder(holder, url, Some(held_by))?;
        if let Some(user) = &patch.user {
            self.check_user("value.user", user)?;
        }
        if let Some(reporter) = &patch.reporter {
            self.check_owns("value.reporter", reporter)?;
        }
        Ok(holder)
    }

    /// Checks a `delete` of the entry `held_by` holds at `url`.
    pub(crate) fn may_delete(&self, url: &str, held_by: &str) -> Result<()> {
        Self::check_holder(self.holder()?, url, Some(held_by))
    }
}
