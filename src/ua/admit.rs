//! What a descriptor asks of the runtime before its code may start: its
//! `constraints` (capabilities the runtime must have) and its `policies`
//! (installed into the runtime's PDP, scoped to the object).
//!
//! **Constraints.** Each key names a capability; the runtime declares its own in
//! [`UaConfig::capabilities`](super::UaConfig::capabilities). `true` needs the
//! capability `true`; `false` needs it absent or `false`; a number needs at
//! least that number; any other value needs exactly that value. The first unmet
//! key is the error.
//!
//! **Policies.** Each entry is a policy set of the runtime's language
//! ([`PolicySet`]). It is installed under the id `<object URL>#<set id>` and
//! every rule is narrowed to the object: for a hyperty, messages to it (its
//! `to` is the hyperty's address) or from it (its `from` is); for a protocol
//! stub, messages to its domain (`to_domains`) or from it (`domains`). A rule
//! that names the recipient side already gets only the sender side (and the
//! other way round); one that names both sides cannot be narrowed and is
//! refused, as is a set `default` (it would decide messages of other objects).

use hyperty_actors::policy::{PolicySet, Rule};
use serde_json::{Map, Value};

/// What a descriptor's policies are narrowed to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// Messages to or from this hyperty address.
    Hyperty(&'a str),
    /// Messages to or from this domain, through its stub.
    Stub(&'a str),
}

/// The first constraint `capabilities` does not meet, described.
pub(crate) fn unmet_constraint(
    constraints: &Map<String, Value>,
    capabilities: &Map<String, Value>,
) -> Option<String> {
    constraints.iter().find_map(|(key, wanted)| {
        let has = capabilities.get(key);
        let met = match (wanted, has) {
            (Value::Bool(true), Some(Value::Bool(true))) => true,
            (Value::Bool(true), _) => false,
            (Value::Bool(false), None | Some(Value::Bool(false))) => true,
            (Value::Bool(false), _) => false,
            (Value::Number(n), Some(Value::Number(h))) => match (n.as_f64(), h.as_f64()) {
                (Some(n), Some(h)) => h >= n,
                _ => false,
            },
            (w, h) => Some(w) == h,
        };
        (!met).then(|| {
            let has = has.map_or_else(|| "nothing".to_owned(), Value::to_string);
            format!("constraint {key:?} = {wanted} not met (the runtime has {has})")
        })
    })
}

/// The installed id of set `id` of the object at `url`.
fn scoped_id(url: &str, id: &str) -> String {
    format!("{url}#{id}")
}

/// `policies` parsed and narrowed to `scope`, each set's id prefixed with `url`.
pub(crate) fn scoped_policies(
    policies: &[Value],
    url: &str,
    scope: Scope<'_>,
) -> Result<Vec<PolicySet>, String> {
    policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let set: PolicySet = serde_json::from_value(p.clone())
                .map_err(|e| format!("policies[{i}] is not a policy set: {e}"))?;
            if set.default.is_some() {
                return Err(format!(
                    "policy {:?}: a descriptor's policy set may not have a default \
                     (it would decide other objects' messages)",
                    set.id
                ));
            }
            let mut rules = Vec::with_capacity(set.rules.len() * 2);
            for rule in &set.rules {
                narrow(rule, scope, &mut rules).map_err(|e| format!("policy {:?}: {e}", set.id))?;
            }
            Ok(PolicySet {
                id: scoped_id(url, &set.id),
                rules,
                ..set
            })
        })
        .collect()
}

/// Appends `rule` narrowed to `scope`: one copy for each side it leaves open.
fn narrow(rule: &Rule, scope: Scope<'_>, out: &mut Vec<Rule>) -> Result<(), String> {
    let t = &rule.target;
    let (to_open, from_open) = match scope {
        Scope::Hyperty(_) => (t.to.is_empty(), t.from.is_empty()),
        Scope::Stub(_) => (t.to_domains.is_empty(), t.domains.is_empty()),
    };
    if !to_open && !from_open {
        return Err(format!(
            "rule {:?} names both the sender and the recipient side, so it cannot be \
             narrowed to its object",
            rule.id
        ));
    }
    if to_open {
        let mut r = rule.clone();
        match scope {
            Scope::Hyperty(a) => r.target.to = vec![a.to_owned()],
            Scope::Stub(d) => r.target.to_domains = vec![d.to_owned()],
        }
        r.id = format!("{}/to", rule.id);
        out.push(r);
    }
    if from_open {
        let mut r = rule.clone();
        match scope {
            Scope::Hyperty(a) => r.target.from = vec![a.to_owned()],
            Scope::Stub(d) => r.target.domains = vec![d.to_owned()],
        }
        r.id = format!("{}/from", rule.id);
        out.push(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn constraints_are_met_by_declared_capabilities_only() {
        let caps =
            map(json!({"node": true, "websocket": true, "memoryMb": 16, "engine": "quickjs"}));
        for ok in [
            json!({}),
            json!({"node": true}),
            json!({"browser": false}),
            json!({"memoryMb": 8}),
            json!({"engine": "quickjs"}),
        ] {
            assert_eq!(unmet_constraint(&map(ok.clone()), &caps), None, "{ok}");
        }
        for (bad, key) in [
            (json!({"browser": true}), "browser"),
            (json!({"node": false}), "node"),
            (json!({"memoryMb": 32}), "memoryMb"),
            (json!({"engine": "v8"}), "engine"),
        ] {
            let why = unmet_constraint(&map(bad), &caps).unwrap();
            assert!(why.contains(key), "{why}");
        }
    }

    #[test]
    fn policies_are_narrowed_to_their_object() {
        let p = json!({"id": "guard", "rules": [
            {"id": "all", "effect": "deny", "target": {"types": ["delete"]}},
            {"id": "who", "effect": "deny", "target": {"from": ["hyperty://evil.org/*"]}}
        ]});
        let sets = scoped_policies(
            &[p],
            "hyperty://b.org/h",
            Scope::Hyperty("hyperty://b.org/h"),
        )
        .unwrap();
        assert_eq!(sets[0].id, "hyperty://b.org/h#guard");
        let rules: Vec<(&str, &Vec<String>, &Vec<String>)> = sets[0]
            .rules
            .iter()
            .map(|r| (r.id.as_str(), &r.target.from, &r.target.to))
            .collect();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].0, "all/to");
        assert_eq!(rules[0].2, &vec!["hyperty://b.org/h".to_owned()]);
        assert_eq!(rules[1].0, "all/from");
        assert_eq!(rules[1].1, &vec!["hyperty://b.org/h".to_owned()]);
        assert_eq!(rules[2].0, "who/to");
        assert_eq!(rules[2].1, &vec!["hyperty://evil.org/*".to_owned()]);

        let stub = scoped_policies(
            &[json!({"id": "s", "rules": [{"id": "r", "effect": "deny"}]})],
            "hyperty-runtime://a.org/1/protostub/1",
            Scope::Stub("b.org"),
        )
        .unwrap();
        assert_eq!(stub[0].rules[0].target.to_domains, vec!["b.org".to_owned()]);
        assert_eq!(stub[0].rules[1].target.domains, vec!["b.org".to_owned()]);

        for bad in [
            json!({"id": "d", "default": "deny", "rules": []}),
            json!({"id": "b", "rules": [{"id": "r", "effect": "deny",
                   "target": {"from": ["x"], "to": ["y"]}}]}),
            json!({"rules": "none"}),
        ] {
            assert!(
                scoped_policies(std::slice::from_ref(&bad), "u", Scope::Hyperty("u")).is_err(),
                "{bad}"
            );
        }
    }
}
