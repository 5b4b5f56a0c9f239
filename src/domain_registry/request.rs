//! Parsing: a reTHINK message addressed to the registry becomes one typed [`Op`].
//!
//! Everything about the wire forms of rethink-wire.md §6 lives here; the rest of
//! the registry never looks at JSON.

use std::time::UNIX_EPOCH;

use hyperty_actors::address::MAX_ADDRESS_LEN;
use hyperty_actors::message::{Message, MessageType, OneOrMany};
use serde_json::{Map, Value};

use super::error::DomainRegistryError;
use super::model::{DataObjectRecord, HypertyRecord, Record, Status};

/// Longest text accepted in a registry field (URLs, names, descriptors), in bytes.
pub const MAX_TEXT_LEN: usize = MAX_ADDRESS_LEN;
/// Most items accepted in a list field (`resources`, `dataSchemes`).
pub const MAX_LIST_LEN: usize = 64;

/// URL schemes whose entries are hyperty instances (every other scheme names a
/// data object).
pub const HYPERTY_SCHEMES: &[&str] = &["hyperty", "hyperty-runtime", "user", "user-guid"];

type Result<T> = std::result::Result<T, DomainRegistryError>;

// The error texts below spell these limits out.
const _: () = assert!(MAX_TEXT_LEN == 2048 && MAX_LIST_LEN == 64);

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// `create`: register or replace an entry.
    Create(Draft),
    /// `read`: look entries up.
    Read(Query),
    /// `update`: refresh an entry and apply `patch` (empty: keep-alive only).
    Update { url: String, patch: Patch },
    /// `delete`: remove an entry (of `user`, if given).
    Delete { url: String, user: Option<String> },
}

/// A new entry; the registry fills in its times and `expires`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Draft {
    pub(crate) record: Record,
    pub(crate) expires: Option<u64>,
}

/// The fields an `update` changes. Fields that do not apply to the entry's kind
/// are ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Patch {
    pub(crate) status: Option<Status>,
    pub(crate) expires: Option<u64>,
    pub(crate) user: Option<String>,
    pub(crate) descriptor: Option<String>,
    pub(crate) guid: Option<String>,
    pub(crate) runtime: Option<String>,
    pub(crate) p2p_requester: Option<String>,
    pub(crate) p2p_handler: Option<String>,
    pub(crate) resources: Option<Vec<String>>,
    pub(crate) data_schemes: Option<Vec<String>>,
    pub(crate) name: Option<String>,
    pub(crate) schema: Option<String>,
    pub(crate) reporter: Option<String>,
}

impl Patch {
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        *self == Patch::default()
    }
}

/// Filters of a read by user: an instance matches if it offers every listed
/// resource and every listed data scheme.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criteria {
    /// Resource types the hyperty must offer (`chat`, `audio`, …).
    pub resources: Vec<String>,
    /// Data schemes the hyperty must handle (`comm`, `connection`, …).
    pub data_schemes: Vec<String>,
}

impl Criteria {
    /// True if the data object `d` offers everything asked for.
    pub fn matches_object(&self, d: &DataObjectRecord) -> bool {
        self.resources.iter().all(|r| d.resources.contains(r))
            && self.data_schemes.iter().all(|s| d.data_schemes.contains(s))
    }

    /// True if `h` offers everything asked for.
    pub fn matches(&self, h: &HypertyRecord) -> bool {
        self.resources.iter().all(|r| h.resources.contains(r))
            && self.data_schemes.iter().all(|s| h.data_schemes.contains(s))
    }

    /// True if nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.data_schemes.is_empty()
    }
}

/// A registry lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// Hyperties of a user URL.
    User { user: String, criteria: Criteria },
    /// Hyperties of the user `user://<domain>/<local>` for `<local>@<domain>`.
    Email { email: String, criteria: Criteria },
    /// Hyperties whose `guid` is this `user-guid://`.
    Guid { guid: String, criteria: Criteria },
    /// The entry (hyperty or data object) at a URL.
    Url(String),
    /// Data objects with this name.
    DataObjectName(String),
    /// Data objects of this reporter.
    DataObjectReporter(String),
    /// Data objects offering every resource type and scheme asked for (and of
    /// the reporter, if one is given): discovery by criteria.
    DataObjects {
        /// Resource types and schemes.
        criteria: Criteria,
        /// Only this reporter's.
        reporter: Option<String>,
    },
}

/// What a `resource` string names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Url(String),
    User(String),
    Guid(String),
    Email(String),
    Name(String),
    Reporter(String),
}

/// Parses a request to the registry at `domain://registry.<domain>`.
pub(crate) fn parse(msg: &Message, domain: &str) -> Result<Op> {
    match &msg.kind {
        MessageType::Create => parse_create(msg).map(Op::Create),
        MessageType::Read => parse_read(msg, domain).map(Op::Read),
        MessageType::Update => parse_update(msg, domain),
        MessageType::Delete => parse_delete(msg, domain),
        other => Err(DomainRegistryError::UnsupportedType(
            other.as_str().to_owned(),
        )),
    }
}

/// Typed access to the fields of one JSON object, naming errors `<prefix>.<key>`.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn text(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_TEXT_LEN => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(DomainRegistryError::invalid(
                &self.path(key),
                "a non-empty string of at most 2048 bytes",
            )),
        }
    }

    fn required_text(&self, key: &str) -> Result<String> {
        self.text(key)?
            .ok_or_else(|| DomainRegistryError::missing(&self.path(key)))
    }

    fn list(&self, key: &str) -> Result<Option<Vec<String>>> {
        const EXPECTED: &str = "an array of at most 64 non-empty strings";
        let items = match self.get(key) {
            None => return Ok(None),
            // a lone string counts as a one-item list
            Some(v @ Value::String(_)) => vec![v],
            Some(Value::Array(items)) if items.len() <= MAX_LIST_LEN => items.iter().collect(),
            Some(_) => return Err(DomainRegistryError::invalid(&self.path(key), EXPECTED)),
        };
        items
            .into_iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() && s.len() <= MAX_TEXT_LEN => Ok(s.clone()),
                _ => Err(DomainRegistryError::invalid(&self.path(key), EXPECTED)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn status(&self, key: &str) -> Result<Option<Status>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Status::from_wire(s).map(Some).ok_or_else(|| {
                DomainRegistryError::invalid(&self.path(key), "\"live\" or \"disconnected\"")
            }),
            Some(_) => Err(DomainRegistryError::invalid(
                &self.path(key),
                "\"live\" or \"disconnected\"",
            )),
        }
    }

    /// `expires`: a positive number of seconds (fractions round up).
    fn expires(&self, key: &str) -> Result<Option<u64>> {
        let bad = || DomainRegistryError::invalid(&self.path(key), "a positive number of seconds");
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let secs = match n.as_u64() {
                    Some(s) => s,
                    None => n
                        .as_f64()
                        .filter(|f| f.is_finite() && *f > 0.0)
                        .map(|f| f.ceil().min(u64::MAX as f64) as u64)
                        .ok_or_else(bad)?,
                };
                if secs == 0 {
                    Err(bad())
                } else {
                    Ok(Some(secs))
                }
            }
            Some(_) => Err(bad()),
        }
    }
}

fn object<'a>(v: &'a Value, field: &str, expected: &'static str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| DomainRegistryError::invalid(field, expected))
}

fn valid_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '+' | '.' | '-'))
}

/// The scheme of an entry URL `<scheme>://<authority>[/…]`, or `None` if `s` is not one.
pub(crate) fn entry_scheme(s: &str) -> Option<&str> {
    if s.is_empty()
        || s.len() > MAX_TEXT_LEN
        || s.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return None;
    }
    let (scheme, rest) = s.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    (valid_scheme(scheme) && !authority.is_empty()).then_some(scheme)
}

fn is_hyperty_scheme(scheme: &str) -> bool {
    HYPERTY_SCHEMES.contains(&scheme)
}

fn parse_create(msg: &Message) -> Result<Draft> {
    let value = msg
        .body
        .value
        .as_ref()
        .filter(|v| !v.is_null())
        .ok_or_else(|| DomainRegistryError::missing("value"))?;
    let f = Fields {
        map: object(value, "value", "an object")?,
        prefix: "value",
    };
    let url = f.required_text("url")?;
    let scheme = entry_scheme(&url).ok_or_else(|| {
        DomainRegistryError::invalid("value.url", "a URL <scheme>://<domain>/<id>")
    })?;
    let status = f.status("status")?.unwrap_or(Status::Live);
    let expires = f.expires("expires")?;
    let resources = f.list("resources")?.unwrap_or_default();
    let data_schemes = f.list("dataSchemes")?.unwrap_or_default();
    let runtime = f.text("runtime")?;
    let p2p_requester = f.text("p2pRequester")?;
    let record = if is_hyperty_scheme(scheme) {
        Record::Hyperty(HypertyRecord {
            user: f.required_text("user")?,
            descriptor: f.required_text("descriptor")?,
            p2p_handler: f.text("p2pHandler")?,
            guid: f.text("guid")?,
            url,
            resources,
            data_schemes,
            runtime,
            p2p_requester,
            status,
            expires: 0,
            starting_time: UNIX_EPOCH,
            last_modified: UNIX_EPOCH,
        })
    } else {
        Record::DataObject(DataObjectRecord {
            name: f.required_text("name")?,
            schema: f.required_text("schema")?,
            reporter: f.required_text("reporter")?,
            url,
            resources,
            data_schemes,
            runtime,
            p2p_requester,
            status,
            expires: 0,
            starting_time: UNIX_EPOCH,
            last_modified: UNIX_EPOCH,
        })
    };
    Ok(Draft { record, expires })
}

fn extra_text(msg: &Message, key: &'static str) -> Result<Option<String>> {
    Fields {
        map: &msg.body.extra,
        prefix: "",
    }
    .text(key)
}

fn resource(msg: &Message) -> Result<Option<&str>> {
    match &msg.body.resource {
        None => Ok(None),
        Some(OneOrMany::One(s)) => Ok(Some(s)),
        Some(OneOrMany::Many(v)) if v.len() == 1 => Ok(v.first().map(String::as_str)),
        Some(OneOrMany::Many(_)) => Err(DomainRegistryError::invalid("resource", "one string")),
    }
}

/// Classifies a URL by scheme: users and guids are lookups, anything else an entry.
fn classify(url: &str) -> Target {
    match url.split_once("://").map(|(s, _)| s) {
        Some("user" | "acct") => Target::User(url.to_owned()),
        Some("user-guid") => Target::Guid(url.to_owned()),
        _ => Target::Url(url.to_owned()),
    }
}

/// Resolves the `resource` forms of §6 and of the registration/discovery specs.
fn resolve(raw: &str, domain: &str) -> Result<Target> {
    let bad = || DomainRegistryError::invalid("resource", "a registry URL, user, e-mail or name");
    if raw.is_empty() || raw.len() > MAX_TEXT_LEN {
        return Err(bad());
    }
    if let Some(path) = raw.strip_prefix('/') {
        // `/<type>/<keyword>/<key>`, `/<type>/<url>` or `/<scheme>/<id>`
        let (first, rest) = path.split_once('/').ok_or_else(bad)?;
        let keyed = rest.split_once('/').filter(|(_, key)| !key.is_empty());
        return Ok(match keyed {
            Some(("user", k)) => Target::User(k.to_owned()),
            Some(("url", k)) => Target::Url(k.to_owned()),
            Some(("guid", k)) => Target::Guid(k.to_owned()),
            Some(("idp-identifier" | "email", k)) => Target::Email(k.to_owned()),
            Some(("name", k)) => Target::Name(k.to_owned()),
            Some(("reporter", k)) => Target::Reporter(k.to_owned()),
            _ if entry_scheme(rest).is_some() => classify(rest),
            _ if valid_scheme(first) && !rest.is_empty() && !rest.contains('/') => {
                Target::Url(format!("{first}://{domain}/{rest}"))
            }
            _ => return Err(bad()),
        });
    }
    if entry_scheme(raw).is_some() {
        Ok(classify(raw))
    } else if raw.contains("://") {
        Err(bad())
    } else if raw.contains('@') {
        Ok(Target::Email(raw.to_owned()))
    } else {
        Ok(Target::Name(raw.to_owned()))
    }
}

fn parse_criteria(msg: &Message) -> Result<(Criteria, Option<String>)> {
    let Some(c) = msg.body.extra.get("criteria").filter(|v| !v.is_null()) else {
        return Ok((Criteria::default(), None));
    };
    let f = Fields {
        map: object(c, "criteria", "an object")?,
        prefix: "criteria",
    };
    let criteria = Criteria {
        resources: f.list("resources")?.unwrap_or_default(),
        data_schemes: f.list("dataSchemes")?.unwrap_or_default(),
    };
    Ok((criteria, f.text("reporter")?))
}

fn parse_read(msg: &Message, domain: &str) -> Result<Query> {
    let (criteria, reporter) = parse_criteria(msg)?;
    let raw = resource(msg)?;
    if raw.is_none() && !criteria.is_empty() {
        return Ok(Query::DataObjects { criteria, reporter });
    }
    if let Some(r) = reporter {
        return Ok(Query::DataObjectReporter(r));
    }
    let raw = raw.ok_or_else(|| DomainRegistryError::missing("resource"))?;
    Ok(match resolve(raw, domain)? {
        Target::User(user) => Query::User { user, criteria },
        Target::Email(email) => Query::Email { email, criteria },
        Target::Guid(guid) => Query::Guid { guid, criteria },
        Target::Url(url) => Query::Url(url),
        Target::Name(name) => Query::DataObjectName(name),
        Target::Reporter(r) => Query::DataObjectReporter(r),
    })
}

fn entry_url(raw: &str, domain: &str, field: &str) -> Result<String> {
    match resolve(raw, domain) {
        Ok(Target::Url(url)) if entry_scheme(&url).is_some() => Ok(url),
        _ => Err(DomainRegistryError::invalid(
            field,
            "the URL of a registry entry",
        )),
    }
}

fn parse_update(msg: &Message, domain: &str) -> Result<Op> {
    let raw = resource(msg)?.ok_or_else(|| DomainRegistryError::missing("resource"))?;
    let url = entry_url(raw, domain, "resource")?;
    // `method: "refresh"` marks a keep-alive; it may still carry a status.
    if let Some(m) = extra_text(msg, "method")? {
        if m != "refresh" {
            return Err(DomainRegistryError::invalid("method", "\"refresh\""));
        }
    }
    let attribute = extra_text(msg, "attribute")?;
    let patch = match msg.body.value.as_ref().filter(|v| !v.is_null()) {
        None => Patch::default(),
        // the spec's unregister: {value:"disconnected", attribute:"status"}
        Some(Value::String(s)) => {
            if attribute.as_deref().is_some_and(|a| a != "status") {
                return Err(DomainRegistryError::invalid(
                    "attribute",
                    "\"status\" when value is a string",
                ));
            }
            let status = Status::from_wire(s).ok_or_else(|| {
                DomainRegistryError::invalid("value", "\"live\" or \"disconnected\"")
            })?;
            Patch {
                status: Some(status),
                ..Patch::default()
            }
        }
        Some(Value::Object(map)) => {
            let f = Fields {
                map,
                prefix: "value",
            };
            Patch {
                status: f.status("status")?,
                expires: f.expires("expires")?,
                user: f.text("user")?,
                descriptor: f.text("descriptor")?,
                guid: f.text("guid")?,
                runtime: f.text("runtime")?,
                p2p_requester: f.text("p2pRequester")?,
                p2p_handler: f.text("p2pHandler")?,
                resources: f.list("resources")?,
                data_schemes: f.list("dataSchemes")?,
                name: f.text("name")?,
                schema: f.text("schema")?,
                reporter: f.text("reporter")?,
            }
        }
        Some(_) => {
            return Err(DomainRegistryError::invalid(
                "value",
                "an object or a status string",
            ))
        }
    };
    Ok(Op::Update { url, patch })
}

fn parse_delete(msg: &Message, domain: &str) -> Result<Op> {
    if let Some(v) = msg.body.value.as_ref().filter(|v| !v.is_null()) {
        let f = Fields {
            map: object(v, "value", "an object {user, url}")?,
            prefix: "value",
        };
        let url = f.required_text("url")?;
        let url = entry_url(&url, domain, "value.url")?;
        return Ok(Op::Delete {
            url,
            user: f.text("user")?,
        });
    }
    let raw = resource(msg)?.ok_or_else(|| DomainRegistryError::missing("resource"))?;
    Ok(Op::Delete {
        url: entry_url(raw, domain, "resource")?,
        user: None,
    })
}

/// `<local>@<domain>` → `user://<domain>/<local>`.
pub(crate) fn email_user(email: &str) -> Option<String> {
    let (local, domain) = email.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !domain.contains('/'))
        .then(|| format!("user://{domain}/{local}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "d.org";

    fn msg(kind: &str, body: Value) -> Message {
        Message::from_value(json!({
            "id": 1, "type": kind, "from": "runtime://d.org/rt/registry",
            "to": "domain://registry.d.org", "body": body,
        }))
        .expect("valid message")
    }

    fn err(kind: &str, body: Value) -> String {
        parse(&msg(kind, body), D).expect_err("refused").to_string()
    }

    #[test]
    fn hyperty_create() {
        let op = parse(
            &msg(
                "create",
                json!({"value": {"user": "user://idp.org/alice", "descriptor": "desc",
                "url": "hyperty://d.org/1", "expires": 30, "resources": ["chat"],
                "dataSchemes": ["comm"], "runtime": "runtime://d.org/rt", "status": "live",
                "p2pHandler": "runtime://d.org/rt/p2p"}, "policy": "policy"}),
            ),
            D,
        )
        .expect("parses");
        let Op::Create(Draft {
            record: Record::Hyperty(h),
            expires,
        }) = op
        else {
            panic!("not a hyperty create: {op:?}");
        };
        assert_eq!(expires, Some(30));
        assert_eq!(h.user, "user://idp.org/alice");
        assert_eq!(h.resources, vec!["chat".to_owned()]);
        assert_eq!(h.p2p_handler.as_deref(), Some("runtime://d.org/rt/p2p"));
    }

    #[test]
    fn data_object_create() {
        let op = parse(
            &msg(
                "create",
                json!({"value": {"name": "room", "schema": "s", "url": "comm://d.org/x",
                "reporter": "hyperty://d.org/1"}}),
            ),
            D,
        )
        .expect("parses");
        assert!(matches!(
            op,
            Op::Create(Draft {
                record: Record::DataObject(_),
                expires: None
            })
        ));
    }

    #[test]
    fn create_errors_name_the_field() {
        assert_eq!(err("create", json!({})), "missing field 'value'");
        assert_eq!(
            err("create", json!({"value": "x"})),
            "field 'value' must be an object"
        );
        assert_eq!(
            err("create", json!({"value": {}})),
            "missing field 'value.url'"
        );
        assert_eq!(
            err("create", json!({"value": {"url": "nope"}})),
            "field 'value.url' must be a URL <scheme>://<domain>/<id>"
        );
        assert_eq!(
            err("create", json!({"value": {"url": "hyperty://d.org/1"}})),
            "missing field 'value.user'"
        );
        assert_eq!(
            err(
                "create",
                json!({"value": {"url": "hyperty://d.org/1", "user": "u"}})
            ),
            "missing field 'value.descriptor'"
        );
        assert_eq!(
            err(
                "create",
                json!({"value": {"url": "comm://d.org/1", "name": "n"}})
            ),
            "missing field 'value.schema'"
        );
        assert!(err(
            "create",
            json!({"value": {"url": "hyperty://d.org/1", "resources": [1]}})
        )
        .contains("'value.resources'"));
        assert!(err(
            "create",
            json!({"value": {"url": "hyperty://d.org/1", "expires": 0}})
        )
        .contains("'value.expires'"));
        assert!(err(
            "create",
            json!({"value": {"url": "hyperty://d.org/1", "status": "gone"}})
        )
        .contains("'value.status'"));
    }

    #[test]
    fn read_forms() {
        let read = |body: Value| match parse(&msg("read", body), D).expect("parses") {
            Op::Read(q) => q,
            other => panic!("{other:?}"),
        };
        let alice = "user://idp.org/alice".to_owned();
        assert_eq!(
            read(json!({"resource": "user://idp.org/alice"})),
            Query::User {
                user: alice.clone(),
                criteria: Criteria::default()
            }
        );
        assert_eq!(
            read(json!({"resource": "/hyperty/user/user://idp.org/alice",
                        "criteria": {"resources": ["chat"], "dataSchemes": ["comm"]}})),
            Query::User {
                user: alice,
                criteria: Criteria {
                    resources: vec!["chat".into()],
                    data_schemes: vec!["comm".into()]
                }
            }
        );
        assert_eq!(
            read(json!({"resource": "hyperty://d.org/1"})),
            Query::Url("hyperty://d.org/1".into())
        );
        assert_eq!(
            read(json!({"resource": "/hyperty/hyperty://d.org/1"})),
            Query::Url("hyperty://d.org/1".into())
        );
        assert_eq!(
            read(json!({"resource": "/hyperty/url/hyperty://d.org/1"})),
            Query::Url("hyperty://d.org/1".into())
        );
        assert_eq!(
            read(json!({"resource": "comm://d.org/x"})),
            Query::Url("comm://d.org/x".into())
        );
        assert_eq!(
            read(json!({"resource": "/dataobject/url/comm://d.org/x"})),
            Query::Url("comm://d.org/x".into())
        );
        assert_eq!(
            read(json!({"resource": "room"})),
            Query::DataObjectName("room".into())
        );
        assert_eq!(
            read(json!({"resource": "/dataobject/name/room"})),
            Query::DataObjectName("room".into())
        );
        assert_eq!(
            read(json!({"resource": "x", "criteria": {"reporter": "hyperty://d.org/1"}})),
            Query::DataObjectReporter("hyperty://d.org/1".into())
        );
        assert_eq!(
            read(json!({"resource": "/dataobject/reporter/hyperty://d.org/1"})),
            Query::DataObjectReporter("hyperty://d.org/1".into())
        );
        assert!(matches!(
            read(json!({"resource": "user-guid://abc"})),
            Query::Guid { guid, .. } if guid == "user-guid://abc"
        ));
        assert!(matches!(
            read(json!({"resource": "/hyperty/idp-identifier/alice@idp.org"})),
            Query::Email { email, .. } if email == "alice@idp.org"
        ));
        assert!(matches!(
            read(json!({"resource": "alice@idp.org"})),
            Query::Email { .. }
        ));
        assert_eq!(err("read", json!({})), "missing field 'resource'");
        assert!(err("read", json!({"resource": "/x"})).contains("'resource'"));
        assert!(err("read", json!({"resource": "a", "criteria": 3})).contains("'criteria'"));
    }

    #[test]
    fn update_forms() {
        let update = |body: Value| match parse(&msg("update", body), D).expect("parses") {
            Op::Update { url, patch } => (url, patch),
            other => panic!("{other:?}"),
        };
        let (url, patch) = update(json!({"resource": "hyperty://d.org/1"}));
        assert_eq!(url, "hyperty://d.org/1");
        assert!(patch.is_empty());
        let (_, patch) = update(
            json!({"resource": "hyperty://d.org/1", "value": {"status": "live"}, "method": "refresh"}),
        );
        assert_eq!(patch.status, Some(Status::Live));
        let (url, patch) = update(
            json!({"resource": "/hyperty/hyperty://d.org/1", "value": "disconnected", "attribute": "status"}),
        );
        assert_eq!(url, "hyperty://d.org/1");
        assert_eq!(patch.status, Some(Status::Disconnected));
        // the registration spec's keep-alive form `/<scheme>/<id>`
        let (url, _) = update(json!({"resource": "/hyperty/1234-qwert"}));
        assert_eq!(url, "hyperty://d.org/1234-qwert");
        let (_, patch) = update(
            json!({"resource": "hyperty://d.org/1", "value": {"status": "live", "user": "u"}}),
        );
        assert_eq!(patch.user.as_deref(), Some("u"));
        assert_eq!(err("update", json!({})), "missing field 'resource'");
        assert!(err("update", json!({"resource": "user://idp/a"})).contains("'resource'"));
        assert!(err(
            "update",
            json!({"resource": "hyperty://d.org/1", "value": "gone"})
        )
        .contains("'value'"));
        assert!(err(
            "update",
            json!({"resource": "hyperty://d.org/1", "value": "live", "attribute": "x"})
        )
        .contains("'attribute'"));
        assert!(err(
            "update",
            json!({"resource": "hyperty://d.org/1", "value": 3})
        )
        .contains("'value'"));
        assert!(err(
            "update",
            json!({"resource": "hyperty://d.org/1", "method": "x"})
        )
        .contains("'method'"));
    }

    #[test]
    fn delete_forms() {
        assert_eq!(
            parse(
                &msg(
                    "delete",
                    json!({"value": {"user": "u", "url": "hyperty://d.org/1"}})
                ),
                D
            )
            .expect("parses"),
            Op::Delete {
                url: "hyperty://d.org/1".into(),
                user: Some("u".into())
            }
        );
        assert_eq!(
            parse(&msg("delete", json!({"resource": "comm://d.org/x"})), D).expect("parses"),
            Op::Delete {
                url: "comm://d.org/x".into(),
                user: None
            }
        );
        assert_eq!(err("delete", json!({})), "missing field 'resource'");
        assert_eq!(
            err("delete", json!({"value": {"user": "u"}})),
            "missing field 'value.url'"
        );
    }

    #[test]
    fn other_types_are_refused() {
        assert_eq!(
            err("subscribe", json!({})),
            "unsupported message type \"subscribe\" (expected create, read, update or delete)"
        );
    }

    #[test]
    fn emails_map_to_user_urls() {
        assert_eq!(
            email_user("alice@idp.org").as_deref(),
            Some("user://idp.org/alice")
        );
        assert_eq!(email_user("@idp.org"), None);
        assert_eq!(email_user("alice@"), None);
    }
}
