//! The object model: a data object's state, the changes that move it from one
//! version to the next, and the bounded history a reporter keeps of them.
//!
//! Every change — an attribute set or delete, an array add or remove, a child
//! created or updated — carries the version it produces. Versions start at 0
//! (the created object) and grow by exactly one per change, so an observer that
//! holds version `n` applies version `n + 1` and nothing else (see
//! [`ObjectState::apply`]).
//!
//! ```
//! use hyperty_actors::syncher::object::{Change, ObjectState, Op};
//! use hyperty_actors::syncher::path::AttrPath;
//! use serde_json::json;
//!
//! let reporter = "hyperty://d.org/alice".parse().unwrap();
//! let mut obj = ObjectState::new(
//!     "connection://d.org/1".parse().unwrap(), "connection", "call", reporter, json!({}), 0,
//! );
//! let change = Change::data(
//!     1, obj.reporter.clone(), 0, Op::Set { attribute: AttrPath::parse("status").unwrap(), value: json!("ringing") },
//! );
//! obj.apply(&change).unwrap();
//! assert_eq!(obj.version, 1);
//! assert_eq!(obj.data, json!({"status": "ringing"}));
//! assert!(obj.apply(&change).is_err(), "version 1 again is stale");
//! ```

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::path::{AttrPath, PathError};
use super::SyncError;
use crate::address::Address;
use crate::message::MessageType;

/// One child of a data object (`<obj>/children/` entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildState {
    /// Who created it.
    pub reporter: Address,
    /// Its data.
    pub data: Value,
}

/// A data object as the reporter holds it and observers replicate it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectState {
    /// The object URL (`<scheme>://<domain>/<id>`).
    pub url: Address,
    /// Its scheme (`connection`, `comm`, `context`, …).
    #[serde(default)]
    pub scheme: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The reporter hyperty.
    pub reporter: Address,
    /// Catalogue URL or name of its schema, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The version of `data` and `children`.
    pub version: u64,
    /// The data.
    pub data: Value,
    /// The children, by id.
    #[serde(default, rename = "childrenObjects")]
    pub children: BTreeMap<String, ChildState>,
    /// Creation time (ms since the epoch).
    #[serde(default)]
    pub created: u64,
    /// Time of the last change (ms since the epoch).
    #[serde(default)]
    pub last_modified: u64,
}

impl ObjectState {
    /// A fresh object at version 0.
    pub fn new(
        url: Address,
        scheme: &str,
        name: &str,
        reporter: Address,
        data: Value,
        now_ms: u64,
    ) -> ObjectState {
        ObjectState {
            url,
            scheme: scheme.to_owned(),
            name: name.to_owned(),
            reporter,
            schema: None,
            version: 0,
            data,
            children: BTreeMap::new(),
            created: now_ms,
            last_modified: now_ms,
        }
    }

    /// The snapshot as JSON (the `value` of a subscribe accept or a read).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A snapshot from JSON. Beside `url`, `reporter`, `version` and `data` it
    /// may leave out what runtime-core's metadata does not always carry (`scheme`:
    /// the URL's, `name`, the times).
    pub fn from_value(v: &Value) -> Result<ObjectState, SyncError> {
        let mut s = ObjectState::deserialize(v)
            .map_err(|e| SyncError::BadRequest(format!("malformed object snapshot: {e}")))?;
        if s.scheme.is_empty() {
            s.scheme = s.url.scheme().to_owned();
        }
        Ok(s)
    }

    /// Applies `change` if it is the next version; the state is unchanged on error.
    pub fn apply(&mut self, change: &Change) -> Result<(), SyncError> {
        if change.version != self.version + 1 {
            return Err(SyncError::StaleVersion {
                got: change.version,
                at: self.version,
            });
        }
        self.apply_unversioned(change)?;
        self.version = change.version;
        self.last_modified = change.last_modified.max(self.last_modified);
        Ok(())
    }

    /// Applies the edit of `change` without looking at its version.
    fn apply_unversioned(&mut self, change: &Change) -> Result<(), SyncError> {
        match (&change.child, &change.op) {
            (Some(id), Op::CreateChild { value }) => {
                if self.children.len() >= MAX_CHILDREN && !self.children.contains_key(id) {
                    return Err(SyncError::Full("children of the object"));
                }
                self.children.insert(
                    id.clone(),
                    ChildState {
                        reporter: change.source.clone(),
                        data: value.clone(),
                    },
                );
                Ok(())
            }
            (None, Op::CreateChild { .. }) => Err(SyncError::BadRequest(
                "a child create needs body.resource (the child id)".into(),
            )),
            (Some(id), op) => {
                let child = self
                    .children
                    .get_mut(id)
                    .ok_or_else(|| SyncError::NotFound(format!("child {id}")))?;
                let mut data = child.data.clone();
                op.edit(&mut data)?;
                child.data = data;
                Ok(())
            }
            (None, op) => {
                let mut data = self.data.clone();
                op.edit(&mut data)?;
                self.data = data;
                Ok(())
            }
        }
    }

    /// What the data (or a child's data) would be after `change`, without
    /// applying it (for schema checks before anything is applied).
    pub fn preview(&self, change: &Change) -> Result<ObjectState, SyncError> {
        let mut next = self.clone();
        next.apply_unversioned(change)?;
        next.version = change.version;
        Ok(next)
    }
}

/// Most children of one object.
pub const MAX_CHILDREN: usize = 10_000;

/// An edit of a data object's data, or of one child's.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Sets an attribute (the root path replaces the data).
    Set {
        /// Where.
        attribute: AttrPath,
        /// The new value.
        value: Value,
    },
    /// Deletes an attribute (an update without `value`).
    Delete {
        /// Where.
        attribute: AttrPath,
    },
    /// Array add: splices `value` in at the index the attribute ends with.
    Insert {
        /// `<array path>.<index>`.
        attribute: AttrPath,
        /// The item.
        value: Value,
    },
    /// Array remove: removes `count` items starting at the index.
    Remove {
        /// `<array path>.<index>`.
        attribute: AttrPath,
        /// How many.
        count: usize,
    },
    /// Creates the child named by the change.
    CreateChild {
        /// Its data.
        value: Value,
    },
}

impl Op {
    fn edit(&self, data: &mut Value) -> Result<(), PathError> {
        match self {
            Op::Set { attribute, value } => attribute.set(data, value.clone()),
            Op::Delete { attribute } => attribute.delete(data),
            Op::Insert { attribute, value } => attribute.insert(data, value.clone()),
            Op::Remove { attribute, count } => attribute.remove(data, *count),
            Op::CreateChild { value } => {
                *data = value.clone();
                Ok(())
            }
        }
    }
}

/// One versioned change of a data object.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The version it produces.
    pub version: u64,
    /// Who made it (the reporter, or a child's creator).
    pub source: Address,
    /// When (ms since the epoch).
    pub last_modified: u64,
    /// The child it concerns (`None`: the object's data).
    pub child: Option<String>,
    /// The edit.
    pub op: Op,
}

impl Change {
    /// A change of the object's data.
    pub fn data(version: u64, source: Address, last_modified: u64, op: Op) -> Change {
        Change {
            version,
            source,
            last_modified,
            child: None,
            op,
        }
    }

    /// The message type it travels as: `create` for a new child, else `update`.
    pub fn kind(&self) -> MessageType {
        match self.op {
            Op::CreateChild { .. } => MessageType::Create,
            _ => MessageType::Update,
        }
    }

    /// The wire body fields (rethink-wire.md §9 "Update" and "Children").
    pub fn to_body(&self, parent: &Address) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("version".into(), json!(self.version));
        m.insert("source".into(), json!(self.source.as_str()));
        m.insert("lastModified".into(), json!(self.last_modified));
        if let Some(c) = &self.child {
            m.insert("resource".into(), json!(c));
        }
        match &self.op {
            Op::Set { attribute, value } => {
                m.insert("attribute".into(), json!(attribute.as_str()));
                m.insert("value".into(), value.clone());
            }
            Op::Delete { attribute } => {
                m.insert("attribute".into(), json!(attribute.as_str()));
            }
            Op::Insert { attribute, value } => {
                m.insert("attribute".into(), json!(attribute.as_str()));
                m.insert("attributeType".into(), json!("array"));
                m.insert("operation".into(), json!("add"));
                m.insert("value".into(), value.clone());
            }
            Op::Remove { attribute, count } => {
                m.insert("attribute".into(), json!(attribute.as_str()));
                m.insert("attributeType".into(), json!("array"));
                m.insert("operation".into(), json!("remove"));
                m.insert("value".into(), json!(count));
            }
            Op::CreateChild { value } => {
                m.insert(
                    "value".into(),
                    json!({
                        "url": self.child,
                        "parent": parent.as_str(),
                        "reporter": self.source.as_str(),
                        "data": value,
                    }),
                );
            }
        }
        m
    }

    /// A history entry: the wire body plus its message `type`.
    pub fn to_entry(&self, parent: &Address) -> Value {
        let mut m = self.to_body(parent);
        m.insert("type".into(), json!(self.kind().as_str()));
        Value::Object(m)
    }

    /// Parses a history entry (see [`Change::to_entry`]).
    pub fn from_entry(v: &Value) -> Result<Change, SyncError> {
        let m = v
            .as_object()
            .ok_or_else(|| SyncError::BadRequest("a change must be an object".into()))?;
        let kind = MessageType::from_wire(m.get("type").and_then(Value::as_str).unwrap_or(""));
        let version = m
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| SyncError::BadRequest("missing field 'body.version'".into()))?;
        let source = m
            .get("source")
            .and_then(Value::as_str)
            .ok_or_else(|| SyncError::BadRequest("missing field 'body.source'".into()))?
            .parse::<Address>()
            .map_err(|e| SyncError::BadRequest(format!("body.source: {e}")))?;
        let op = Op::parse(&kind, m)?;
        Ok(Change {
            version,
            source,
            last_modified: m.get("lastModified").and_then(Value::as_u64).unwrap_or(0),
            child: m.get("resource").and_then(Value::as_str).map(str::to_owned),
            op,
        })
    }
}

impl Op {
    /// Parses the edit of an `update` or child `create` body.
    pub fn parse(kind: &MessageType, m: &Map<String, Value>) -> Result<Op, SyncError> {
        if *kind == MessageType::Create {
            let value = m.get("value").cloned().unwrap_or(Value::Null);
            return Ok(Op::CreateChild {
                value: child_data(value),
            });
        }
        if *kind != MessageType::Update {
            return Err(SyncError::BadRequest(format!(
                "a change is an update or a child create, not {kind}"
            )));
        }
        let attribute = match m.get("attribute") {
            None | Some(Value::Null) => AttrPath::root(),
            Some(Value::String(s)) => AttrPath::parse(s)?,
            Some(_) => {
                return Err(SyncError::BadRequest(
                    "body.attribute must be a string".into(),
                ))
            }
        };
        let value = m.get("value").cloned();
        let array = m.get("attributeType").and_then(Value::as_str) == Some("array");
        let operation = m.get("operation").and_then(Value::as_str);
        match (array, operation, value) {
            (true, Some("add"), Some(value)) => Ok(Op::Insert { attribute, value }),
            (true, Some("remove"), v) => {
                let count = match v {
                    None => 1,
                    Some(v) => v
                        .as_u64()
                        .and_then(|c| usize::try_from(c).ok())
                        .ok_or_else(|| {
                            SyncError::BadRequest(
                                "an array remove's value is the number of items".into(),
                            )
                        })?,
                };
                Ok(Op::Remove { attribute, count })
            }
            (true, other, _) => Err(SyncError::BadRequest(format!(
                "array operation must be \"add\" (with a value) or \"remove\", not {other:?}"
            ))),
            (false, _, None) if attribute.is_root() => Err(SyncError::BadRequest(
                "an update without attribute must carry a value".into(),
            )),
            (false, _, None) => Ok(Op::Delete { attribute }),
            (false, _, Some(value)) => Ok(Op::Set { attribute, value }),
        }
    }
}

/// The data of a child create's `value`: the wire form wraps it
/// (`{url, parent, reporter, data}`); a hyperty's own request may give it bare.
pub fn child_data(value: Value) -> Value {
    match value {
        Value::Object(mut m) if m.contains_key("parent") && m.contains_key("data") => {
            m.remove("data").unwrap_or(Value::Null)
        }
        v => v,
    }
}

/// The last changes of an object, for observers that missed some. Bounded.
#[derive(Debug, Clone, Default)]
pub struct History {
    max: usize,
    changes: VecDeque<Change>,
}

impl History {
    /// A history of at most `max` changes.
    pub fn new(max: usize) -> History {
        History {
            max,
            changes: VecDeque::new(),
        }
    }

    /// Restores a persisted history (the newest `max` are kept).
    pub fn from_changes(max: usize, changes: Vec<Change>) -> History {
        let mut h = History::new(max);
        for c in changes {
            h.push(c);
        }
        h
    }

    /// Records a change, forgetting the oldest beyond the bound.
    pub fn push(&mut self, change: Change) {
        if self.max == 0 {
            return;
        }
        if self.changes.len() == self.max {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// Every change after `version`, if the history still holds all of them (up to
    /// `current`); `None` if some are gone.
    pub fn since(&self, version: u64, current: u64) -> Option<Vec<Change>> {
        if version >= current {
            return Some(Vec::new());
        }
        let first = self.changes.front()?.version;
        if first > version + 1 {
            return None;
        }
        Some(
            self.changes
                .iter()
                .filter(|c| c.version > version)
                .cloned()
                .collect(),
        )
    }

    /// The changes held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter()
    }

    /// How many changes are held.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// True if none are held.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj() -> ObjectState {
        ObjectState::new(
            "comm://d.org/1".parse().unwrap(),
            "comm",
            "room",
            "hyperty://d.org/r".parse().unwrap(),
            json!({"members": []}),
            1,
        )
    }

    fn set(v: u64, attr: &str, value: Value) -> Change {
        Change::data(
            v,
            "hyperty://d.org/r".parse().unwrap(),
            v,
            Op::Set {
                attribute: AttrPath::parse(attr).unwrap(),
                value,
            },
        )
    }

    #[test]
    fn versions_apply_strictly_in_order() {
        let mut o = obj();
        assert!(matches!(
            o.apply(&set(2, "a", json!(1))),
            Err(SyncError::StaleVersion { got: 2, at: 0 })
        ));
        o.apply(&set(1, "a", json!(1))).unwrap();
        o.apply(&set(2, "a", json!(2))).unwrap();
        assert_eq!(o.data["a"], json!(2));
        let bad = Change::data(
            3,
            o.reporter.clone(),
            3,
            Op::Delete {
                attribute: AttrPath::parse("nope").unwrap(),
            },
        );
        let before = o.clone();
        assert!(o.apply(&bad).is_err());
        assert_eq!(o, before, "nothing applied");
    }

    #[test]
    fn wire_round_trip_of_every_op() {
        let parent: Address = "comm://d.org/1".parse().unwrap();
        let src: Address = "hyperty://d.org/r".parse().unwrap();
        let ops = [
            Op::Set {
                attribute: AttrPath::parse("a.b").unwrap(),
                value: json!([1]),
            },
            Op::Delete {
                attribute: AttrPath::parse("a").unwrap(),
            },
            Op::Insert {
                attribute: AttrPath::parse("members.0").unwrap(),
                value: json!("x"),
            },
            Op::Remove {
                attribute: AttrPath::parse("members.0").unwrap(),
                count: 2,
            },
            Op::CreateChild {
                value: json!({"text": "hi"}),
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let child = matches!(op, Op::CreateChild { .. }).then(|| "c#1".to_owned());
            let c = Change {
                version: i as u64 + 1,
                source: src.clone(),
                last_modified: 7,
                child,
                op,
            };
            assert_eq!(Change::from_entry(&c.to_entry(&parent)).unwrap(), c);
        }
        let m = json!({"attributeType": "array", "operation": "splice", "value": 1});
        assert!(Op::parse(&MessageType::Update, m.as_object().unwrap()).is_err());
        let m = json!({"attribute": 5});
        assert!(Op::parse(&MessageType::Update, m.as_object().unwrap()).is_err());
    }

    #[test]
    fn children_and_their_updates() {
        let mut o = obj();
        let src: Address = "hyperty://d.org/obs".parse().unwrap();
        let mut c = Change {
            version: 1,
            source: src.clone(),
            last_modified: 1,
            child: Some("k#1".into()),
            op: Op::CreateChild {
                value: json!({"candidate": "a"}),
            },
        };
        o.apply(&c).unwrap();
        c.version = 2;
        c.op = Op::Set {
            attribute: AttrPath::parse("candidate").unwrap(),
            value: json!("b"),
        };
        o.apply(&c).unwrap();
        assert_eq!(o.children["k#1"].data, json!({"candidate": "b"}));
        assert_eq!(o.children["k#1"].reporter, src);
        c.version = 3;
        c.child = Some("other".into());
        assert!(matches!(o.apply(&c), Err(SyncError::NotFound(_))));
        let snap = ObjectState::from_value(&o.to_value()).unwrap();
        assert_eq!(snap, o);
    }

    #[test]
    fn history_is_bounded_and_knows_what_it_lost() {
        let mut h = History::new(3);
        for v in 1..=5 {
            h.push(set(v, "a", json!(v)));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.since(5, 5).unwrap().len(), 0);
        assert_eq!(
            h.since(2, 5)
                .unwrap()
                .iter()
                .map(|c| c.version)
                .collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(h.since(1, 5).is_none(), "version 2 is gone");
        assert!(History::new(0).since(0, 1).is_none());
    }
}
