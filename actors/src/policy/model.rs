//! The policy language: plain serde data, the same tree from JSON or TOML.
//!
//! A [`PolicyFile`] holds [`PolicySet`]s; a set holds [`Rule`]s; a rule has an
//! [`Effect`], a [`Target`] (which messages it is about), [`Conditions`] (when it
//! applies) and [`Obligation`]s (what the PEP must do when it enforces the rule).
//! The module docs of [`crate::policy`] show a complete example.
//!
//! Parsing is strict: unknown fields are errors (a misspelt `tagret` must not
//! silently widen a rule). Every error names the policy, the rule and the field, see
//! [`PolicyError`]. These types only describe policies; [`CompiledPolicies`]
//! validates and compiles them.
//!
//! [`CompiledPolicies`]: super::CompiledPolicies

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PolicyError;

/// What a rule (or a set's default) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// The message may pass.
    Permit,
    /// The message is blocked (403 "Blocked by policy").
    Deny,
}

/// How the decisions of several rules (in a set) or sets (in a snapshot) combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Combining {
    /// Any applicable deny wins; otherwise any permit; otherwise not applicable.
    #[default]
    DenyOverrides,
    /// Any applicable permit wins; otherwise any deny; otherwise not applicable.
    PermitOverrides,
    /// The first applicable rule (in order) decides.
    FirstApplicable,
}

/// A file of policy sets (`[[policies]]` in TOML, `{"policies": [...]}` in JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// How the sets combine; when absent, the PDP's configured algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combining: Option<Combining>,
    /// The sets, in evaluation order.
    #[serde(default)]
    pub policies: Vec<PolicySet>,
}

/// A named group of rules, added and removed as a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    /// Unique among the PDP's sets; adding a set with a known id replaces it.
    pub id: String,
    /// How the rules of this set combine (default: deny-overrides).
    #[serde(default)]
    pub combining: Combining,
    /// The set's decision when none of its rules applies; absent: not applicable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Effect>,
    /// The rules, in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within its set; reported in decisions and logs.
    pub id: String,
    /// What the rule decides when it applies.
    pub effect: Effect,
    /// Which messages it is about (empty: every message).
    #[serde(default, skip_serializing_if = "Target::is_empty")]
    pub target: Target,
    /// When it applies (empty: always).
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
    /// What the PEP must do when it enforces this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<Obligation>,
}

/// Which messages a rule is about. Every non-empty field must match (AND); within
/// a field any entry may match (OR).
///
/// Address and identity patterns: `*` (anything), `prefix*`, `*suffix`, an exact
/// string, or `re:<regex>` (the whole string must match; compiled once).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Message types (`create`, `update`, …), exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Sender address patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// Recipient address patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Sender address schemes (`hyperty`, `comm`, …), exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemes: Vec<String>,
    /// Sender domain patterns (`a.org`, `*.a.org`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Recipient domain patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_domains: Vec<String>,
    /// Patterns of the sender's *verified* user identity (its user URL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Data-object schemes (`comm`, `connection`, …) of the recipient, or of the
    /// sender when the recipient is not a data object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_schemes: Vec<String>,
    /// Where the message travels relative to the runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directions: Vec<PolicyDirection>,
}

impl Target {
    /// True if no field is set (the rule targets every message).
    pub fn is_empty(&self) -> bool {
        *self == Target::default()
    }
}

/// A message's direction, as a policy names it (see [`crate::bus::Direction`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyDirection {
    /// Local sender, local recipient.
    Local,
    /// Local sender, recipient behind a protocol stub.
    Outgoing,
    /// Arrived through a protocol stub.
    Incoming,
}

/// When a rule applies. Every present condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Time-of-day window (see [`TimeWindow`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<TimeWindow>,
    /// Days of the week.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekdays: Option<Vec<Weekday>>,
    /// Offset from UTC, in minutes, of the clock `time_of_day` and `weekdays`
    /// are read on (default 0: UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset_minutes: Option<i32>,
    /// `true`: the sender carries an identity assertion the verifier accepts;
    /// `false`: it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asserted: Option<bool>,
    /// Holds once the sender exceeds a rate (meant for `deny` rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

impl Conditions {
    /// True if no condition is set.
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }
}

/// `{from = "08:00", to = "18:00"}`: from inclusive, to exclusive, `HH:MM` or
/// `HH:MM:SS`. A window with `from` after `to` wraps midnight (`22:00`–`06:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Start of the window.
    pub from: String,
    /// End of the window.
    pub to: String,
}

/// A day of the week (`mon` … `sun`, or the full English name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    #[serde(alias = "monday")]
    Mon,
    #[serde(alias = "tuesday")]
    Tue,
    #[serde(alias = "wednesday")]
    Wed,
    #[serde(alias = "thursday")]
    Thu,
    #[serde(alias = "friday")]
    Fri,
    #[serde(alias = "saturday")]
    Sat,
    #[serde(alias = "sunday")]
    Sun,
}

/// `{max = 10, window_ms = 1000}`: the condition holds for a sender's messages
/// beyond the `max`-th within a window of `window_ms` that starts at its first
/// counted message. Only messages that match the rule's target and its other
/// conditions are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Messages allowed per window.
    pub max: u32,
    /// Window length in milliseconds.
    pub window_ms: u64,
}

/// Something the PEP must do when it enforces a rule's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Obligation {
    /// The sender must carry an identity assertion the
    /// [`AssertionVerifier`](super::AssertionVerifier) accepts, issued by `domain`
    /// (a domain pattern) when given, or by the sender's own domain when
    /// `sender_domain` is true. Otherwise the message is blocked (fails closed).
    RequireAssertion {
        /// Domain pattern the assertion must come from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
        /// The assertion must come from the sender's domain.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sender_domain: bool,
    },
    /// Writes the verified identity into `body.assertedIdentity`
    /// (`{userURL, domain}`). While any rule attaches identities, the PEP removes a
    /// sender-supplied `assertedIdentity` from every message.
    AttachIdentity,
    /// Removes `body.identity` before delivery (e.g. on messages leaving the domain).
    StripIdentity,
    /// Logs the decision at `info` level on the `hyperty::policy::audit` target.
    Audit {
        /// Free text included in the log line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

/// The text formats policies are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// TOML.
    Toml,
}

impl Format {
    /// The name used in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Toml => "TOML",
        }
    }

    /// `.toml` files are TOML, `.json` files JSON; other names are sniffed (a
    /// text starting with `{` is JSON).
    pub fn guess(path: &Path, text: &str) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => Format::Toml,
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// Parses text of either format into a JSON tree (TOML is converted).
pub(crate) fn to_tree(text: &str, format: Format) -> Result<Value, PolicyError> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| PolicyError::Syntax {
            format: format.as_str(),
            message: e.to_string(),
        }),
        Format::Toml => {
            let table: toml::Table = toml::from_str(text).map_err(|e| PolicyError::Syntax {
                format: format.as_str(),
                message: e.message().to_owned(),
            })?;
            serde_json::to_value(table).map_err(|e| PolicyError::Syntax {
                format: format.as_str(),
                message: e.to_string(),
            })
        }
    }
}

/// Deserialises `tree`; a structural error names the set, the rule and the field.
/// `root_is_set`: the tree is one policy set (not a file).
fn from_tree<T: DeserializeOwned>(tree: Value, root_is_set: bool) -> Result<T, PolicyError> {
    // Locating the error needs the tree after deserialisation consumed it.
    let copy = tree.clone();
    serde_path_to_error::deserialize::<_, T>(tree).map_err(|e| {
        let (policy, rule, field) = locate(&copy, e.path(), root_is_set);
        PolicyError::Invalid {
            policy,
            rule,
            field,
            reason: e.into_inner().to_string(),
        }
    })
}

/// The ids of the set and rule a path goes through, and the field path left.
fn locate(
    tree: &Value,
    path: &serde_path_to_error::Path,
    root_is_set: bool,
) -> (String, Option<String>, String) {
    use serde_path_to_error::Segment;
    let id_of = |v: &Value, fallback: String| {
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(fallback)
    };
    let mut node = Some(tree);
    let mut policy = if root_is_set {
        id_of(tree, "(set)".to_owned())
    } else {
        String::new()
    };
    let mut rule = None;
    let mut field: Vec<String> = Vec::new();
    // 0: in the file, 1: in a set, 2: in a rule
    let mut depth = u8::from(root_is_set);
    let mut pending: Option<&str> = None;
    for seg in path.iter() {
        match seg {
            Segment::Map { key } => {
                node = node.and_then(|n| n.get(key.as_str()));
                pending = Some(key.as_str());
                field.push(key.clone());
            }
            Segment::Seq { index } => {
                node = node.and_then(|n| n.get(*index));
                match (depth, pending) {
                    (0, Some("policies")) => {
                        policy = node.map_or(format!("policies[{index}]"), |n| {
                            id_of(n, format!("policies[{index}]"))
                        });
                        depth = 1;
                        field.clear();
                    }
                    (1, Some("rules")) => {
                        rule = Some(node.map_or(format!("rules[{index}]"), |n| {
                            id_of(n, format!("rules[{index}]"))
                        }));
                        depth = 2;
                        field.clear();
                    }
                    _ => {
                        if let Some(last) = field.last_mut() {
                            last.push_str(&format!("[{index}]"));
                        }
                    }
                }
                pending = None;
            }
            Segment::Enum { variant } => field.push(variant.clone()),
            Segment::Unknown => {}
        }
    }
    let field = if field.is_empty() {
        "(structure)".to_owned()
    } else {
        field.join(".")
    };
    (policy, rule, field)
}

impl PolicyFile {
    /// Parses a file's text in `format`.
    pub fn parse(text: &str, format: Format) -> Result<PolicyFile, PolicyError> {
        from_tree(to_tree(text, format)?, false)
    }

    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<PolicyFile, PolicyError> {
        Self::parse(text, Format::Json)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<PolicyFile, PolicyError> {
        Self::parse(text, Format::Toml)
    }

    /// Reads and parses a file (format from its extension, see [`Format::guess`]).
    pub fn load(path: &Path) -> Result<PolicyFile, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, Format::guess(path, &text))
    }
}

impl PolicySet {
    /// Parses one set from text in `format`.
    pub fn parse(text: &str, format: Format) -> Result<PolicySet, PolicyError> {
        Self::from_value(to_tree(text, format)?)
    }

    /// Parses one set from JSON text.
    pub fn from_json(text: &str) -> Result<PolicySet, PolicyError> {
        Self::parse(text, Format::Json)
    }

    /// Parses one set from TOML text.
    pub fn from_toml(text: &str) -> Result<PolicySet, PolicyError> {
        Self::parse(text, Format::Toml)
    }

    /// Builds one set from a JSON value (e.g. the `value` of a `create` message).
    pub fn from_value(value: Value) -> Result<PolicySet, PolicyError> {
        from_tree(value, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_toml_give_the_same_tree() {
        let toml = r#"
            combining = "first-applicable"
            [[policies]]
            id = "p"
            default = "deny"
            [[policies.rules]]
            id = "r"
            effect = "permit"
            obligations = [{ kind = "require-assertion", domain = "a.org" }, { kind = "attach-identity" }]
            [policies.rules.target]
            types = ["create"]
            to = ["hyperty://a.org/*"]
            directions = ["incoming"]
            [policies.rules.conditions]
            time_of_day = { from = "08:00", to = "18:00" }
            weekdays = ["mon", "friday"]
            asserted = true
            rate = { max = 3, window_ms = 1000 }
        "#;
        let json = json!({
            "combining": "first-applicable",
            "policies": [{
                "id": "p", "default": "deny",
                "rules": [{
                    "id": "r", "effect": "permit",
                    "target": {"types": ["create"], "to": ["hyperty://a.org/*"], "directions": ["incoming"]},
                    "conditions": {"time_of_day": {"from": "08:00", "to": "18:00"},
                                   "weekdays": ["mon", "fri"], "asserted": true,
                                   "rate": {"max": 3, "window_ms": 1000}},
                    "obligations": [{"kind": "require-assertion", "domain": "a.org"}, {"kind": "attach-identity"}]
                }]
            }]
        });
        let a = PolicyFile::from_toml(toml).unwrap();
        let b = PolicyFile::from_json(&json.to_string()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.policies[0].combining, Combining::DenyOverrides);
        // serialising and parsing again gives the same value
        let again = PolicyFile::from_json(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn structural_errors_name_the_set_rule_and_field() {
        let text = json!({"policies": [
            {"id": "ok", "rules": []},
            {"id": "corp", "rules": [
                {"id": "r1", "effect": "deny"},
                {"id": "r2", "effect": "deny", "target": {"from": ["x", 3]}}
            ]}
        ]})
        .to_string();
        match PolicyFile::from_json(&text).unwrap_err() {
            PolicyError::Invalid {
                policy,
                rule,
                field,
                ..
            } => {
                assert_eq!(policy, "corp");
                assert_eq!(rule.as_deref(), Some("r2"));
                assert_eq!(field, "target.from[1]");
            }
            e => panic!("{e}"),
        }
        // a misspelt field is an error, not a wider rule
        let e = PolicySet::from_value(
            json!({"id": "s", "rules": [{"id": "r", "effect": "deny", "tagret": {}}]}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, PolicyError::Invalid { policy, rule: Some(r), reason, .. }
                if policy == "s" && r == "r" && reason.contains("tagret")),
            "{e}"
        );
        let e =
            PolicySet::from_value(json!({"id": "s", "rules": [{"id": "r", "effect": "maybe"}]}))
                .unwrap_err();
        assert!(
            matches!(&e, PolicyError::Invalid { field, .. } if field == "effect"),
            "{e}"
        );
        let e = PolicySet::from_value(json!({"id": "s", "rules": [{"id": "r", "effect": "deny",
            "obligations": [{"kind": "teleport"}]}]}))
        .unwrap_err();
        assert!(
            matches!(&e, PolicyError::Invalid { field, .. } if field.starts_with("obligations[0]")),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_say_which_format() {
        assert!(matches!(
            PolicyFile::from_json("{"),
            Err(PolicyError::Syntax { format: "JSON", .. })
        ));
        assert!(matches!(
            PolicyFile::from_toml("[[policies]\nid="),
            Err(PolicyError::Syntax { format: "TOML", .. })
        ));
    }

    #[test]
    fn format_guess() {
        assert_eq!(Format::guess(Path::new("p.toml"), "{"), Format::Toml);
        assert_eq!(Format::guess(Path::new("p.JSON"), "x"), Format::Json);
        assert_eq!(
            Format::guess(Path::new("p"), "  {\"policies\":[]}"),
            Format::Json
        );
        assert_eq!(Format::guess(Path::new("p"), "[[policies]]"), Format::Toml);
    }
}
