use super::*;
use crate::policy::clock::utc_ms;
use crate::policy::model::PolicyFile;
use proptest::prelude::*;
use serde_json::{json, Value};

fn set(v: Value) -> PolicySet {
    PolicySet::from_value(v).unwrap()
}

fn compile(sets: Vec<Value>) -> CompiledPolicies {
    compile_with(sets, Combining::DenyOverrides)
}

fn compile_with(sets: Vec<Value>, combining: Combining) -> CompiledPolicies {
    let sets: Vec<PolicySet> = sets.into_iter().map(set).collect();
    let options = CompileOptions {
        combining,
        ..CompileOptions::default()
    };
    CompiledPolicies::compile(&sets, &options).unwrap()
}

/// One set with one rule `r` of `effect` with `target` and `conditions`.
fn one(effect: &str, target: Value, conditions: Value) -> CompiledPolicies {
    compile(vec![json!({"id": "s", "rules": [
        {"id": "r", "effect": effect, "target": target, "conditions": conditions}
    ]})])
}

const A: &str = "hyperty://a.org/1";
const B: &str = "hyperty://b.org/2";

fn req<'a>(kind: &'a str, from: &'a str, to: &'a str) -> PolicyRequest<'a> {
    PolicyRequest::new(kind, from, to)
}

fn effect(p: &CompiledPolicies, r: PolicyRequest<'_>) -> DecisionEffect {
    p.decide(&r).effect
}

use DecisionEffect::{Deny, NotApplicable as Na, Permit};

#[test]
fn request_derives_schemes_and_domains() {
    let r = req("create", "comm://a.org/obj/changes", "hyperty://b.org/x");
    assert_eq!(
        (r.from_scheme, r.from_domain, r.to_domain, r.data_scheme),
        ("comm", "a.org", "b.org", Some("comm"))
    );
    let r = req("read", "mn:/session", "connection://b.org/c");
    assert_eq!((r.from_scheme, r.from_domain), ("mn", ""));
    assert_eq!(r.data_scheme, Some("connection"));
    assert_eq!(req("read", A, B).data_scheme, None);
}

#[test]
fn non_data_schemes_agree_with_the_address_module() {
    use crate::address::{Address, AddressKind};
    for s in NON_DATA_SCHEMES.iter().filter(|s| **s != "mn") {
        let a = Address::parse(&format!("{s}://a.org/x")).unwrap();
        assert_ne!(a.kind(), AddressKind::DataObject, "{s}");
    }
    for s in crate::address::DATA_SCHEMES {
        let a = Address::parse(&format!("{s}://a.org/x")).unwrap();
        assert_eq!(a.kind(), AddressKind::DataObject);
        assert_eq!(data_scheme_of(a.as_str()), Some(*s));
    }
}

#[test]
fn target_types() {
    let p = one("deny", json!({"types": ["create", "delete"]}), json!({}));
    assert_eq!(effect(&p, req("create", A, B)), Deny);
    assert_eq!(effect(&p, req("delete", A, B)), Deny);
    assert_eq!(effect(&p, req("read", A, B)), Na);
}

#[test]
fn target_from_and_to_patterns() {
    let p = one(
        "deny",
        json!({"from": ["hyperty://a.org/*"], "to": ["hyperty://b.org/2", "*/bulk"]}),
        json!({}),
    );
    assert_eq!(effect(&p, req("read", A, B)), Deny);
    assert_eq!(effect(&p, req("read", A, "hyperty://c.org/bulk")), Deny);
    assert_eq!(effect(&p, req("read", A, "hyperty://b.org/3")), Na);
    assert_eq!(effect(&p, req("read", "hyperty://a.org2/1", B)), Na);
    let p = one("deny", json!({"to": ["*"]}), json!({}));
    assert_eq!(effect(&p, req("read", A, B)), Deny);
    let p = one(
        "deny",
        json!({"from": ["re:hyperty://[ab]\\.org/\\d+"]}),
        json!({}),
    );
    assert_eq!(effect(&p, req("read", A, B)), Deny);
    assert_eq!(effect(&p, req("read", "hyperty://a.org/x", B)), Na);
}

#[test]
fn target_schemes_and_domains() {
    let p = one("deny", json!({"schemes": ["comm"]}), json!({}));
    assert_eq!(effect(&p, req("update", "comm://a.org/o", B)), Deny);
    assert_eq!(effect(&p, req("update", A, B)), Na);
    let p = one(
        "deny",
        json!({"domains": ["*.evil.org", "evil.org"]}),
        json!({}),
    );
    assert_eq!(effect(&p, req("read", "hyperty://x.evil.org/1", B)), Deny);
    assert_eq!(effect(&p, req("read", "hyperty://evil.org/1", B)), Deny);
    assert_eq!(effect(&p, req("read", "hyperty://notevil.org/1", B)), Na);
    let p = one("deny", json!({"to_domains": ["b.org"]}), json!({}));
    assert_eq!(effect(&p, req("read", A, B)), Deny);
    assert_eq!(effect(&p, req("read", B, A)), Na);
}

#[test]
fn target_users_need_a_verified_identity() {
    let p = one("permit", json!({"users": ["user://a.org/*"]}), json!({}));
    assert_eq!(effect(&p, req("read", A, B)), Na);
    let r = req("read", A, B).with_identity(Some("user://a.org/alice"), true);
    assert_eq!(effect(&p, r), Permit);
    let r = req("read", A, B).with_identity(Some("user://b.org/bob"), true);
    assert_eq!(effect(&p, r), Na);
    assert!(p.needs_identity());
}

#[test]
fn target_data_schemes_and_directions() {
    let p = one("deny", json!({"data_schemes": ["comm"]}), json!({}));
    assert_eq!(
        effect(&p, req("subscribe", A, "comm://b.org/o/subscription")),
        Deny
    );
    assert_eq!(effect(&p, req("update", "comm://b.org/o", A)), Deny);
    assert_eq!(effect(&p, req("update", "connection://b.org/o", A)), Na);
    assert_eq!(effect(&p, req("read", A, B)), Na);
    let p = one(
        "deny",
        json!({"directions": ["incoming", "local"]}),
        json!({}),
    );
    assert_eq!(effect(&p, req("read", A, B)), Na, "no direction: no match");
    assert_eq!(
        effect(&p, req("read", A, B).with_direction(Direction::Incoming)),
        Deny
    );
    assert_eq!(
        effect(&p, req("read", A, B).with_direction(Direction::Outgoing)),
        Na
    );
    assert_eq!(
        effect(&p, req("read", A, B).with_direction(Direction::Local)),
        Deny
    );
}

#[test]
fn condition_time_of_day_and_weekdays() {
    // 2024-01-01 was a Monday.
    let mon_9 = utc_ms(2024, 1, 1, 9, 0, 0);
    let mon_23 = utc_ms(2024, 1, 1, 23, 0, 0);
    let sat_9 = utc_ms(2024, 1, 6, 9, 0, 0);
    let p = one(
        "permit",
        json!({}),
        json!({"time_of_day": {"from": "08:00", "to": "18:00"}, "weekdays": ["mon", "tuesday"]}),
    );
    assert!(p.needs_time());
    assert_eq!(effect(&p, req("read", A, B).at(mon_9)), Permit);
    assert_eq!(effect(&p, req("read", A, B).at(mon_23)), Na);
    assert_eq!(effect(&p, req("read", A, B).at(sat_9)), Na);
    // the end is exclusive
    assert_eq!(
        effect(&p, req("read", A, B).at(utc_ms(2024, 1, 1, 18, 0, 0))),
        Na
    );
    // a window across midnight
    let p = one(
        "deny",
        json!({}),
        json!({"time_of_day": {"from": "22:00", "to": "06:00"}}),
    );
    assert_eq!(effect(&p, req("read", A, B).at(mon_23)), Deny);
    assert_eq!(
        effect(&p, req("read", A, B).at(utc_ms(2024, 1, 2, 5, 59, 59))),
        Deny
    );
    assert_eq!(effect(&p, req("read", A, B).at(mon_9)), Na);
    // an offset moves both time and weekday: 23:00 UTC Monday is 01:00 Tuesday at +120
    let p = one(
        "permit",
        json!({}),
        json!({"weekdays": ["tue"], "time_of_day": {"from": "00:30", "to": "01:30"}, "utc_offset_minutes": 120}),
    );
    assert_eq!(effect(&p, req("read", A, B).at(mon_23)), Permit);
    assert_eq!(effect(&p, req("read", A, B).at(mon_9)), Na);
}

#[test]
fn condition_asserted() {
    let p = one("deny", json!({}), json!({"asserted": false}));
    assert_eq!(effect(&p, req("read", A, B)), Deny);
    assert_eq!(
        effect(
            &p,
            req("read", A, B).with_identity(Some("user://a.org/x"), true)
        ),
        Na
    );
    let p = one("permit", json!({}), json!({"asserted": true}));
    assert_eq!(effect(&p, req("read", A, B)), Na);
    assert_eq!(
        effect(&p, req("read", A, B).with_identity(None, true)),
        Permit
    );
}

#[test]
fn condition_rate_per_sender_and_window() {
    let p = one(
        "deny",
        json!({"types": ["create"]}),
        json!({"rate": {"max": 2, "window_ms": 1000}}),
    );
    let at = |t, from| req("create", from, B).at(t);
    assert_eq!(effect(&p, at(0, A)), Na);
    assert_eq!(effect(&p, at(10, A)), Na);
    assert_eq!(effect(&p, at(20, A)), Deny, "third in the window");
    // another sender has its own counter
    assert_eq!(effect(&p, at(30, B)), Na);
    // messages outside the target are not counted
    assert_eq!(effect(&p, req("read", A, B).at(40)), Na);
    // a new window starts
    assert_eq!(effect(&p, at(1000, A)), Na);
    assert_eq!(effect(&p, at(1001, A)), Na);
    assert_eq!(effect(&p, at(1002, A)), Deny);
}

#[test]
fn rate_table_is_bounded() {
    let t = RateTable::new(1, 1000, 3);
    for (i, s) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        assert!(!t.exceeded(s, i as u64));
    }
    assert_eq!(t.len(), 3);
    // expired windows go first
    assert!(!t.exceeded("f", 5000));
    assert_eq!(t.len(), 1);
}

#[test]
fn rate_counters_survive_recompilation_of_an_unchanged_rule() {
    let rule = json!({"id": "s", "rules": [
        {"id": "r", "effect": "deny", "conditions": {"rate": {"max": 1, "window_ms": 1000}}}]});
    let opts = CompileOptions::default();
    let sets = vec![set(rule.clone())];
    let first = CompiledPolicies::compile(&sets, &opts).unwrap();
    assert_eq!(effect(&first, req("read", A, B).at(0)), Na);
    let more = vec![set(rule), set(json!({"id": "t", "rules": []}))];
    let second = CompiledPolicies::compile_after(&more, &opts, Some(&first)).unwrap();
    assert_eq!(effect(&second, req("read", A, B).at(1)), Deny);
    // a changed rate starts afresh
    let changed = vec![set(json!({"id": "s", "rules": [
        {"id": "r", "effect": "deny", "conditions": {"rate": {"max": 5, "window_ms": 1000}}}]}))];
    let third = CompiledPolicies::compile_after(&changed, &opts, Some(&second)).unwrap();
    assert_eq!(effect(&third, req("read", A, B).at(2)), Na);
}

fn three_rules(combining: &str) -> CompiledPolicies {
    compile(vec![json!({"id": "s", "combining": combining, "rules": [
        {"id": "p1", "effect": "permit", "target": {"types": ["read"]}},
        {"id": "d1", "effect": "deny", "target": {"from": [A]}},
        {"id": "p2", "effect": "permit", "target": {"to": [B]}}
    ]})])
}

#[test]
fn combining_within_a_set() {
    let rule = |p: &CompiledPolicies, r| p.decide(&r).rule.map(|s| s.to_string());
    let p = three_rules("deny-overrides");
    assert_eq!(rule(&p, req("read", A, B)).as_deref(), Some("d1"));
    assert_eq!(rule(&p, req("read", B, B)).as_deref(), Some("p1"));
    let p = three_rules("permit-overrides");
    assert_eq!(rule(&p, req("read", A, B)).as_deref(), Some("p1"));
    assert_eq!(
        rule(&p, req("create", A, "hyperty://c.org/1")).as_deref(),
        Some("d1")
    );
    let p = three_rules("first-applicable");
    assert_eq!(rule(&p, req("read", A, B)).as_deref(), Some("p1"));
    assert_eq!(rule(&p, req("create", A, B)).as_deref(), Some("d1"));
    assert_eq!(rule(&p, req("create", B, B)).as_deref(), Some("p2"));
    assert_eq!(p.decide(&req("create", B, A)).effect, Na);
}

#[test]
fn set_defaults_and_combining_across_sets() {
    let sets = || {
        vec![
            json!({"id": "open", "default": "permit", "rules": []}),
            json!({"id": "closed", "rules": [{"id": "no", "effect": "deny", "target": {"from": [A]}}]}),
        ]
    };
    let p = compile_with(sets(), Combining::DenyOverrides);
    let d = p.decide(&req("read", A, B));
    assert_eq!((d.effect, d.policy.as_deref()), (Deny, Some("closed")));
    let d = p.decide(&req("read", B, A));
    assert_eq!(
        (d.effect, d.policy.as_deref(), d.rule),
        (Permit, Some("open"), None)
    );
    let p = compile_with(sets(), Combining::PermitOverrides);
    assert_eq!(effect(&p, req("read", A, B)), Permit);
    let p = compile_with(sets(), Combining::FirstApplicable);
    assert_eq!(p.decide(&req("read", A, B)).policy.as_deref(), Some("open"));
    let p = compile_with(
        vec![json!({"id": "shut", "default": "deny", "rules": []})],
        Combining::PermitOverrides,
    );
    assert_eq!(effect(&p, req("read", A, B)), Deny);
}

#[test]
fn obligations_come_with_the_deciding_rule() {
    let p = one("permit", json!({}), json!({}));
    assert!(p.decide(&req("read", A, B)).obligations.is_empty());
    let p = compile(vec![
        json!({"id": "s", "rules": [{"id": "r", "effect": "permit",
        "obligations": [{"kind": "require-assertion", "sender_domain": true}, {"kind": "audit"}]}]}),
    ]);
    let d = p.decide(&req("read", A, B));
    assert_eq!(d.obligations.len(), 2);
    assert!(p.needs_identity());
    assert!(!p.attaches_identity());
}

#[test]
fn index_keeps_rule_order_across_buckets() {
    // One rule in each bucket; all match; first-applicable must pick the first.
    let p = compile(vec![
        json!({"id": "s", "combining": "first-applicable", "rules": [
            {"id": "scan", "effect": "permit", "target": {"schemes": ["hyperty"]}},
            {"id": "domain", "effect": "deny", "target": {"domains": ["a.org"]}},
            {"id": "type", "effect": "deny", "target": {"types": ["read"]}},
            {"id": "from-auth", "effect": "deny", "target": {"from": ["hyperty://a.org/*"]}},
            {"id": "to-exact", "effect": "deny", "target": {"to": [B, "hyperty://b.org/*"]}}
        ]}),
    ]);
    assert_eq!(p.decide(&req("read", A, B)).rule.as_deref(), Some("scan"));
    let idx = &p.sets[0].index;
    let all = idx.candidates(&req("read", A, B)).collect::<Vec<_>>();
    assert_eq!(all, vec![0, 1, 2, 3, 4]);
    // unrelated messages find no candidates but the scanned rule
    let few = idx.candidates(&req("create", B, A)).collect::<Vec<_>>();
    assert_eq!(few, vec![0]);
}

#[test]
fn domain_patterns_are_indexed_by_domain_and_dot_suffix() {
    let p = compile(vec![json!({"id": "s", "rules": [
        {"id": "exact", "effect": "deny", "target": {"domains": ["a.org"]}},
        {"id": "sub", "effect": "deny", "target": {"domains": ["*.b.org"]}},
        {"id": "deep", "effect": "deny", "target": {"domains": ["*.a.b.c.d.org"]}},
        {"id": "to", "effect": "deny", "target": {"to_domains": ["*.org", "x.com"]}}
    ]})]);
    let idx = &p.sets[0].index;
    assert_eq!(idx.scan, vec![2], "five labels: scanned");
    let ids = |from: &str, to: &str| idx.candidates(&req("read", from, to)).collect::<Vec<_>>();
    assert_eq!(ids("hyperty://a.org/1", "hyperty://x.com/1"), vec![0, 2, 3]);
    assert_eq!(
        ids("hyperty://x.y.b.org/1", "hyperty://z.net/1"),
        vec![1, 2]
    );
    assert_eq!(ids("hyperty://b.org/1", "hyperty://z.net/1"), vec![2]);
    let d = p.decide(&req("read", "hyperty://q.b.org/1", "hyperty://z.net/1"));
    assert_eq!(d.rule.as_deref(), Some("sub"));
    let d = p.decide(&req(
        "read",
        "hyperty://e.a.b.c.d.org/1",
        "hyperty://z.net/1",
    ));
    assert_eq!(d.rule.as_deref(), Some("deep"));
    let d = p.decide(&req("read", "hyperty://z.net/1", "hyperty://w.org/1"));
    assert_eq!(d.rule.as_deref(), Some("to"));
}

#[test]
fn many_rules_are_indexed() {
    let rules: Vec<Value> = (0..10_000)
        .map(|i| match i % 3 {
            0 => json!({"id": format!("r{i}"), "effect": "deny", "target": {"to": [format!("hyperty://d{i}.org/h")]}}),
            1 => json!({"id": format!("r{i}"), "effect": "deny", "target": {"from": [format!("hyperty://d{i}.org/*")]}}),
            _ => json!({"id": format!("r{i}"), "effect": "deny", "target": {"types": [format!("t{i}")]}}),
        })
        .collect();
    let p = compile(vec![json!({"id": "big", "rules": rules})]);
    assert_eq!(p.rule_count(), 10_000);
    let d = p.decide(&req("read", "hyperty://d4.org/x", B));
    assert_eq!(d.rule.as_deref(), Some("r4"));
    let d = p.decide(&req("read", A, "hyperty://d9999.org/h"));
    assert_eq!(d.rule.as_deref(), Some("r9999"));
    let d = p.decide(&req("t5", A, B));
    assert_eq!(d.rule.as_deref(), Some("r5"));
    assert_eq!(p.sets[0].index.candidates(&req("read", A, B)).count(), 0);
}

fn err(v: Value) -> PolicyError {
    let sets = vec![PolicySet::from_value(v).unwrap()];
    CompiledPolicies::compile(&sets, &CompileOptions::default()).unwrap_err()
}

fn field_of(e: &PolicyError) -> (&str, Option<&str>, &str) {
    match e {
        PolicyError::Invalid {
            policy,
            rule,
            field,
            ..
        } => (policy, rule.as_deref(), field),
        other => panic!("not an Invalid error: {other}"),
    }
}

#[test]
fn invalid_policies_name_the_rule_and_field() {
    let rule = |extra: Value| {
        let mut r = json!({"id": "r", "effect": "deny"});
        if let (Some(r), Value::Object(e)) = (r.as_object_mut(), extra) {
            r.extend(e);
        }
        json!({"id": "s", "rules": [{"id": "ok", "effect": "permit"}, r]})
    };
    let cases = [
        (json!({"target": {"from": ["a*b"]}}), "target.from[0]"),
        (json!({"target": {"to": ["x", "re:("]}}), "target.to[1]"),
        (json!({"target": {"users": [""]}}), "target.users[0]"),
        (json!({"target": {"types": [""]}}), "target.types[0]"),
        (json!({"target": {"schemes": ["a b"]}}), "target.schemes[0]"),
        (
            json!({"conditions": {"time_of_day": {"from": "8:00", "to": "18:00"}}}),
            "conditions.time_of_day.from",
        ),
        (
            json!({"conditions": {"time_of_day": {"from": "08:00", "to": "25:00"}}}),
            "conditions.time_of_day.to",
        ),
        (
            json!({"conditions": {"time_of_day": {"from": "08:00", "to": "08:00"}}}),
            "conditions.time_of_day",
        ),
        (
            json!({"conditions": {"weekdays": []}}),
            "conditions.weekdays",
        ),
        (
            json!({"conditions": {"utc_offset_minutes": 1440}}),
            "conditions.utc_offset_minutes",
        ),
        (
            json!({"conditions": {"rate": {"max": 0, "window_ms": 10}}}),
            "conditions.rate.max",
        ),
        (
            json!({"conditions": {"rate": {"max": 1, "window_ms": 0}}}),
            "conditions.rate.window_ms",
        ),
        (
            json!({"obligations": [{"kind": "require-assertion", "domain": "re:.*"}]}),
            "obligations[0].domain",
        ),
    ];
    for (extra, field) in cases {
        let e = err(rule(extra.clone()));
        assert_eq!(field_of(&e), ("s", Some("r"), field), "{extra}: {e}");
        assert_eq!(e.response_code(), crate::message::ResponseCode::BadRequest);
    }
    let e = err(
        json!({"id": "s", "rules": [{"id": "r", "effect": "deny"}, {"id": "r", "effect": "deny"}]}),
    );
    assert_eq!(field_of(&e), ("s", Some("r"), "id"));
    let e = err(json!({"id": "", "rules": []}));
    assert_eq!(field_of(&e), ("", None, "id"));
    let e = err(json!({"id": "s", "rules": [{"id": "", "effect": "deny"}]}));
    assert_eq!(field_of(&e), ("s", Some("rules[0]"), "id"));
}

use crate::error::ToResponseCode;

#[test]
fn limits() {
    let opts = CompileOptions {
        limits: PolicyLimits {
            max_policy_sets: 1,
            max_rules: 2,
            ..PolicyLimits::default()
        },
        ..CompileOptions::default()
    };
    let s = |id: &str, n: usize| {
        set(
            json!({"id": id, "rules": (0..n).map(|i| json!({"id": format!("r{i}"), "effect": "deny"})).collect::<Vec<_>>()}),
        )
    };
    assert!(CompiledPolicies::compile(&[s("a", 2)], &opts).is_ok());
    let e = CompiledPolicies::compile(&[s("a", 3)], &opts).unwrap_err();
    assert_eq!(
        e,
        PolicyError::TooMany {
            what: "rules",
            limit: 2
        }
    );
    assert_eq!(e.response_code().as_u16(), 429);
    let e = CompiledPolicies::compile(&[s("a", 0), s("b", 0)], &opts).unwrap_err();
    assert!(matches!(
        e,
        PolicyError::TooMany {
            what: "policy sets",
            ..
        }
    ));
    let e =
        CompiledPolicies::compile(&[s("a", 0), s("a", 0)], &CompileOptions::default()).unwrap_err();
    assert_eq!(field_of(&e), ("a", None, "id"));
}

#[test]
fn require_assertion_domain_patterns() {
    assert!(domain_pattern_matches("*", "x"));
    assert!(domain_pattern_matches("*.a.org", "idp.a.org"));
    assert!(domain_pattern_matches("a.*", "a.org"));
    assert!(domain_pattern_matches("a.org", "a.org"));
    assert!(!domain_pattern_matches("a.org", "b.org"));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        "[a-z:/.*0-9-]{0,16}".prop_map(Value::String),
        prop_oneof![
            Just("deny"),
            Just("permit"),
            Just("first-applicable"),
            Just("re:(a|b)*"),
            Just("hyperty://a.org/*"),
            Just("08:00"),
            Just("24:00"),
            Just("require-assertion"),
            Just("mon"),
            Just("incoming"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("policies".to_owned()),
                    Just("rules".to_owned()),
                    Just("id".to_owned()),
                    Just("effect".to_owned()),
                    Just("combining".to_owned()),
                    Just("default".to_owned()),
                    Just("target".to_owned()),
                    Just("conditions".to_owned()),
                    Just("obligations".to_owned()),
                    Just("kind".to_owned()),
                    Just("from".to_owned()),
                    Just("to".to_owned()),
                    Just("types".to_owned()),
                    Just("rate".to_owned()),
                    Just("max".to_owned()),
                    Just("window_ms".to_owned()),
                    Just("time_of_day".to_owned()),
                    Just("weekdays".to_owned()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..7
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_policy_json_never_panics(v in arb_json()) {
        let text = v.to_string();
        if let Ok(file) = PolicyFile::from_json(&text) {
            if let Ok(p) = CompiledPolicies::compile(&file.policies, &CompileOptions::default()) {
                let _ = p.decide(&req("read", A, B).at(1));
            }
        }
        if let Ok(s) = PolicySet::from_value(v) {
            let _ = CompiledPolicies::compile(&[s], &CompileOptions::default());
        }
    }

    #[test]
    fn arbitrary_text_never_panics_either_parser(s in "\\PC{0,200}") {
        let _ = PolicyFile::from_json(&s);
        let _ = PolicyFile::from_toml(&s);
    }

    #[test]
    fn arbitrary_requests_never_panic(kind in "\\PC{0,12}", from in "\\PC{0,40}", to in "\\PC{0,40}", t in any::<u64>()) {
        let p = compile(vec![json!({"id": "s", "rules": [
            {"id": "a", "effect": "deny", "target": {"to": ["hyperty://a.org/*"]}, "conditions": {"weekdays": ["mon"]}},
            {"id": "b", "effect": "permit", "target": {"from": ["re:.*x.*"]}, "conditions": {"rate": {"max": 1, "window_ms": 5}}},
            {"id": "c", "effect": "deny", "conditions": {"time_of_day": {"from": "22:00", "to": "02:00"}, "utc_offset_minutes": -600}}
        ]})]);
        let _ = p.decide(&PolicyRequest::new(&kind, &from, &to).at(t));
    }
}
