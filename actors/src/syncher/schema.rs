//! Data-object schemas: JSON Schema documents, checked with the `jsonschema` crate.
//!
//! A schema comes with the object's `create` (`body.schema` as a JSON Schema
//! object) or by name from the schemas the runtime knows ([`SchemaTable`], filled
//! from hyperty descriptors or by the runtime owner). The object's URL scheme is
//! the schema's `properties.scheme` (`const`, reTHINK's `constant`, `default` or
//! the first `enum` value), else the scheme the request names, else `resource`.
//!
//! The object's data must satisfy the schema after every change; a change that
//! would break it is refused (400) before anything is applied or sent.
//!
//! ```
//! use hyperty_actors::syncher::schema::Schema;
//! use serde_json::json;
//!
//! let s = Schema::compile(Some("Reading"), json!({
//!     "type": "object",
//!     "properties": {"scheme": {"constant": "context"}, "value": {"type": "number"}},
//! })).unwrap();
//! assert_eq!(s.scheme(), Some("context"));
//! assert!(s.check(&json!({"value": 21.5})).is_ok());
//! assert!(s.check(&json!({"value": "warm"})).is_err());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::SyncError;

/// Most schemas a runtime keeps by name.
pub const MAX_SCHEMAS: usize = 1_000;
/// Most validation errors described in one refusal.
const MAX_REPORTED_ERRORS: usize = 3;

/// A compiled JSON Schema.
#[derive(Clone)]
pub struct Schema {
    name: Option<String>,
    raw: Value,
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// Compiles `raw`; a document that is not a valid JSON Schema is refused (400).
    pub fn compile(name: Option<&str>, raw: Value) -> Result<Schema, SyncError> {
        if !raw.is_object() && !raw.is_boolean() {
            return Err(SyncError::BadRequest(
                "body.schema must be a JSON Schema object or a known schema name".into(),
            ));
        }
        let validator = jsonschema::validator_for(&raw)
            .map_err(|e| SyncError::BadRequest(format!("invalid JSON Schema: {e}")))?;
        Ok(Schema {
            name: name.map(str::to_owned),
            raw,
            validator: Arc::new(validator),
        })
    }

    /// The name (catalogue URL) it was registered under, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The schema document.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The object scheme it declares (`properties.scheme`), if any.
    pub fn scheme(&self) -> Option<&str> {
        let s = self.raw.get("properties")?.get("scheme")?;
        ["const", "constant", "default"]
            .iter()
            .find_map(|k| s.get(*k).and_then(Value::as_str))
            .or_else(|| s.get("enum")?.get(0)?.as_str())
    }

    /// `Ok` if `data` satisfies the schema; else 400 naming what is wrong.
    pub fn check(&self, data: &Value) -> Result<(), SyncError> {
        if self.validator.is_valid(data) {
            return Ok(());
        }
        let why: Vec<String> = self
            .validator
            .iter_errors(data)
            .take(MAX_REPORTED_ERRORS)
            .map(|e| {
                let at = e.instance_path().to_string();
                match at.is_empty() {
                    true => e.to_string(),
                    false => format!("{at}: {e}"),
                }
            })
            .collect();
        Err(SyncError::SchemaViolation(why.join("; ")))
    }
}

/// Schemas known by name (from hyperty descriptors or the runtime owner). Bounded.
#[derive(Debug, Default)]
pub struct SchemaTable {
    by_name: HashMap<String, Schema>,
}

impl SchemaTable {
    /// Registers (or replaces) `name`.
    pub fn insert(&mut self, name: &str, raw: Value) -> Result<(), SyncError> {
        if !self.by_name.contains_key(name) && self.by_name.len() >= MAX_SCHEMAS {
            return Err(SyncError::Full("schemas"));
        }
        let s = Schema::compile(Some(name), raw)?;
        self.by_name.insert(name.to_owned(), s);
        Ok(())
    }

    /// The schema called `name`.
    pub fn get(&self, name: &str) -> Option<&Schema> {
        self.by_name.get(name)
    }

    /// Resolves a request's `body.schema`: an inline document or a known name
    /// (a name nobody registered is not checked, as reTHINK schema URLs that are
    /// not in the catalogue are not).
    pub fn resolve(
        &self,
        given: Option<&Value>,
    ) -> Result<(Option<String>, Option<Schema>), SyncError> {
        match given {
            None | Some(Value::Null) => Ok((None, None)),
            Some(Value::String(name)) => Ok((Some(name.clone()), self.get(name).cloned())),
            Some(raw) => {
                let name = raw
                    .get("$id")
                    .or_else(|| raw.get("title"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let s = Schema::compile(name.as_deref(), raw.clone())?;
                Ok((name, Some(s)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemes_and_refusals() {
        let s = Schema::compile(
            None,
            json!({"properties": {"scheme": {"enum": ["comm"]}}, "required": ["name"]}),
        )
        .unwrap();
        assert_eq!(s.scheme(), Some("comm"));
        let err = s.check(&json!({})).unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        assert_eq!(err.code().as_u16(), 400);
        assert!(Schema::compile(None, json!(3)).is_err());
        assert!(Schema::compile(None, json!({"type": "nonsense"})).is_err());
        assert_eq!(Schema::compile(None, json!({})).unwrap().scheme(), None);
    }

    #[test]
    fn table_resolves_names_and_inline_documents() {
        let mut t = SchemaTable::default();
        t.insert(
            "Conn",
            json!({"properties": {"scheme": {"const": "connection"}}}),
        )
        .unwrap();
        let (name, s) = t.resolve(Some(&json!("Conn"))).unwrap();
        assert_eq!(name.as_deref(), Some("Conn"));
        assert_eq!(s.unwrap().scheme(), Some("connection"));
        let (name, s) = t.resolve(Some(&json!("hyperty-catalogue://x/y"))).unwrap();
        assert!(name.is_some() && s.is_none());
        let (_, s) = t
            .resolve(Some(&json!({"title": "T", "type": "object"})))
            .unwrap();
        assert!(s.unwrap().check(&json!([])).is_err());
        assert!(t.resolve(Some(&json!({"type": 5}))).is_err());
    }
}
