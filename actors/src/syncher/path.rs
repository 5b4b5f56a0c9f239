//! Attribute paths (`"a.b.0"`) and the edits they address in a data object.
//!
//! A reTHINK update names what it changes with a dot path into the object's data
//! (rethink-wire.md §9 "Update"): each segment is an object key, or an array index
//! when the value it reaches is an array. The empty path is the whole data.
//!
//! ```
//! use hyperty_actors::syncher::path::AttrPath;
//! use serde_json::json;
//!
//! let mut data = json!({"peer": {"candidates": ["a"]}});
//! AttrPath::parse("peer.candidates.1").unwrap().insert(&mut data, json!("b")).unwrap();
//! AttrPath::parse("peer.status").unwrap().set(&mut data, json!("ringing")).unwrap();
//! assert_eq!(data, json!({"peer": {"candidates": ["a", "b"], "status": "ringing"}}));
//! assert!(AttrPath::parse("peer..x").is_err());
//! ```

use std::fmt;

use serde_json::{Map, Value};

/// Longest attribute path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Most segments in an attribute path.
pub const MAX_PATH_DEPTH: usize = 32;

/// Why a path or an edit is refused (all answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path text is not a dot path.
    #[error("malformed attribute path {path:?}: {why}")]
    Malformed {
        /// The path as given.
        path: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A segment leads nowhere (missing key, index out of range, a scalar).
    #[error("attribute {path:?} does not exist")]
    Missing {
        /// The path.
        path: String,
    },
    /// An array operation on something that is not an array element.
    #[error("attribute {path:?} is not an array element")]
    NotArray {
        /// The path.
        path: String,
    },
}

/// A parsed attribute path. The empty path is the whole data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AttrPath {
    text: String,
    segments: Vec<String>,
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn index(seg: &str) -> Option<usize> {
    (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
        .then(|| seg.parse().ok())
        .flatten()
}

impl AttrPath {
    /// The whole data.
    pub fn root() -> AttrPath {
        AttrPath::default()
    }

    /// Parses `"a.b.0"`; `""` is the root.
    pub fn parse(text: &str) -> Result<AttrPath, PathError> {
        let bad = |why| PathError::Malformed {
            path: text.chars().take(64).collect(),
            why,
        };
        if text.len() > MAX_PATH_LEN {
            return Err(bad("longer than 1024 bytes"));
        }
        if text.is_empty() {
            return Ok(AttrPath::root());
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.len() > MAX_PATH_DEPTH {
            return Err(bad("more than 32 segments"));
        }
        if segments.iter().any(String::is_empty) {
            return Err(bad("empty segment"));
        }
        if segments.iter().any(|s| s.chars().any(char::is_control)) {
            return Err(bad("control character"));
        }
        Ok(AttrPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for the whole data.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// This path with `segment` appended.
    pub fn child(&self, segment: &str) -> Result<AttrPath, PathError> {
        match self.is_root() {
            true => AttrPath::parse(segment),
            false => AttrPath::parse(&format!("{}.{segment}", self.text)),
        }
    }

    fn missing(&self) -> PathError {
        PathError::Missing {
            path: self.text.clone(),
        }
    }

    /// The value at the path.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.segments.iter().try_fold(root, |v, s| match v {
            Value::Object(m) => m.get(s),
            Value::Array(a) => index(s).and_then(|i| a.get(i)),
            _ => None,
        })
    }

    /// The container holding the last segment, creating missing objects on the way.
    fn parent_mut<'a>(&self, root: &'a mut Value) -> Result<(&'a mut Value, &str), PathError> {
        let Some((last, init)) = self.segments.split_last() else {
            return Err(self.missing());
        };
        let mut v = root;
        for s in init {
            v = match v {
                Value::Object(m) => m
                    .entry(s.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
                Value::Array(a) => index(s)
                    .and_then(|i| a.get_mut(i))
                    .ok_or_else(|| self.missing())?,
                _ => return Err(self.missing()),
            };
        }
        Ok((v, last))
    }

    /// Sets the value at the path (the root replaces the whole data). Missing
    /// objects on the way are created; an array index may be one past the end.
    pub fn set(&self, root: &mut Value, value: Value) -> Result<(), PathError> {
        if self.is_root() {
            *root = value;
            return Ok(());
        }
        let missing = self.missing();
        let (parent, last) = self.parent_mut(root)?;
        match parent {
            Value::Object(m) => {
                m.insert(last.to_owned(), value);
                Ok(())
            }
            Value::Array(a) => match index(last) {
                Some(i) if i < a.len() => {
                    a[i] = value;
                    Ok(())
                }
                Some(i) if i == a.len() => {
                    a.push(value);
                    Ok(())
                }
                _ => Err(missing),
            },
            _ => Err(missing),
        }
    }

    /// Deletes the attribute (an array element is removed).
    pub fn delete(&self, root: &mut Value) -> Result<(), PathError> {
        if self.is_root() {
            *root = Value::Null;
            return Ok(());
        }
        let missing = self.missing();
        let (parent, last) = self.parent_mut(root)?;
        let found = match parent {
            Value::Object(m) => m.remove(last).is_some(),
            Value::Array(a) => match index(last) {
                Some(i) if i < a.len() => {
                    a.remove(i);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        found.then_some(()).ok_or(missing)
    }

    fn array_at<'a>(&self, root: &'a mut Value) -> Result<(&'a mut Vec<Value>, usize), PathError> {
        let not_array = PathError::NotArray {
            path: self.text.clone(),
        };
        let (parent, last) = self.parent_mut(root).map_err(|_| not_array.clone())?;
        match (parent, index(last)) {
            (Value::Array(a), Some(i)) => Ok((a, i)),
            _ => Err(not_array),
        }
    }

    /// Array add: splices `value` in at the index the path ends with.
    pub fn insert(&self, root: &mut Value, value: Value) -> Result<(), PathError> {
        let missing = self.missing();
        let (a, i) = self.array_at(root)?;
        if i > a.len() {
            return Err(missing);
        }
        a.insert(i, value);
        Ok(())
    }

    /// Array remove: removes `count` items starting at the index the path ends with.
    pub fn remove(&self, root: &mut Value, count: usize) -> Result<(), PathError> {
        let missing = self.missing();
        let (a, i) = self.array_at(root)?;
        match i.checked_add(count) {
            Some(end) if end <= a.len() && count > 0 => {
                a.drain(i..end);
                Ok(())
            }
            _ => Err(missing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> AttrPath {
        AttrPath::parse(s).unwrap()
    }

    #[test]
    fn parse_refuses_malformed_paths() {
        for bad in [".", "a.", ".a", "a..b", "a.\u{7}"] {
            assert!(
                matches!(AttrPath::parse(bad), Err(PathError::Malformed { .. })),
                "{bad:?}"
            );
        }
        assert!(AttrPath::parse(&"a.".repeat(40)).is_err());
        assert!(AttrPath::parse(&"x".repeat(2000)).is_err());
        assert!(p("").is_root());
        assert_eq!(p("a.b.0").as_str(), "a.b.0");
        assert_eq!(p("").child("x").unwrap(), p("x"));
        assert_eq!(p("a").child("0").unwrap(), p("a.0"));
    }

    #[test]
    fn set_get_delete() {
        let mut d = json!({});
        p("a.b").set(&mut d, json!(1)).unwrap();
        assert_eq!(d, json!({"a": {"b": 1}}));
        assert_eq!(p("a.b").get(&d), Some(&json!(1)));
        p("list").set(&mut d, json!([1, 2])).unwrap();
        p("list.2").set(&mut d, json!(3)).unwrap();
        p("list.0").set(&mut d, json!(0)).unwrap();
        assert_eq!(d["list"], json!([0, 2, 3]));
        assert!(p("list.9").set(&mut d, json!(9)).is_err());
        assert!(p("a.b.c").set(&mut d, json!(9)).is_err(), "b is a number");
        p("list.1").delete(&mut d).unwrap();
        assert_eq!(d["list"], json!([0, 3]));
        p("a.b").delete(&mut d).unwrap();
        assert!(matches!(
            p("a.b").delete(&mut d),
            Err(PathError::Missing { .. })
        ));
        p("").set(&mut d, json!({"new": true})).unwrap();
        assert_eq!(d, json!({"new": true}));
    }

    #[test]
    fn array_add_and_remove() {
        let mut d = json!({"l": ["a", "d"]});
        p("l.1").insert(&mut d, json!("b")).unwrap();
        p("l.2").insert(&mut d, json!("c")).unwrap();
        p("l.4").insert(&mut d, json!("e")).unwrap();
        assert_eq!(d["l"], json!(["a", "b", "c", "d", "e"]));
        assert!(p("l.9").insert(&mut d, json!("x")).is_err());
        p("l.1").remove(&mut d, 2).unwrap();
        assert_eq!(d["l"], json!(["a", "d", "e"]));
        assert!(p("l.2").remove(&mut d, 5).is_err());
        assert!(p("l.0").remove(&mut d, 0).is_err());
        assert!(matches!(
            p("x.0").insert(&mut d, json!(1)),
            Err(PathError::NotArray { .. })
        ));
        assert!(matches!(
            p("l").insert(&mut d, json!(1)),
            Err(PathError::NotArray { .. })
        ));
    }
}
