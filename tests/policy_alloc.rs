//! The decision function allocates nothing per message: counted with a global
//! allocator wrapper (per thread, so other tests' threads do not interfere).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hyperty::prelude::*;
use hyperty_actors::policy::{CompileOptions, CompiledPolicies};
use serde_json::{json, Value};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn big_policy() -> PolicySet {
    let mut rules: Vec<Value> = (0..10_000)
        .map(|i| {
            let target = match i % 4 {
                0 => json!({"to": [format!("hyperty://d{i}.org/h{i}")]}),
                1 => json!({"to": [format!("hyperty://p{i}.org/*")], "types": ["create"]}),
                2 => json!({"from": [format!("hyperty://s{i}.org/x")]}),
                _ => json!({"types": [format!("custom-{i}")]}),
            };
            json!({"id": format!("r{i}"), "effect": "deny", "target": target})
        })
        .collect();
    // rules the request below does reach: scanned, regex, time and identity conditions
    rules.push(json!({"id": "scan", "effect": "deny", "target": {"domains": ["*.nowhere.org"]}}));
    rules.push(json!({"id": "regex", "effect": "deny", "target": {"to": ["re:hyperty://p4\\.org/[0-9]+"]}}));
    rules.push(json!({"id": "hours", "effect": "deny", "target": {"to": ["hyperty://p4.org/*"]},
        "conditions": {"time_of_day": {"from": "22:00", "to": "06:00"}, "weekdays": ["sun"], "asserted": false}}));
    rules.push(json!({"id": "hit", "effect": "permit", "target": {"to": ["hyperty://p4.org/*"], "users": ["user://a.org/*"]},
        "obligations": [{"kind": "attach-identity"}]}));
    PolicySet::from_value(json!({"id": "big", "rules": rules})).unwrap()
}

#[test]
fn decide_allocates_nothing() {
    let policies = CompiledPolicies::compile(&[big_policy()], &CompileOptions::default()).unwrap();
    let request = PolicyRequest::new("create", "hyperty://a.org/me", "hyperty://p4.org/other")
        .with_identity(Some("user://a.org/alice"), true)
        .at(1_700_000_000_000);
    let miss = PolicyRequest::new("update", "hyperty://zz.org/1", "hyperty://yy.org/2");
    // warm up (lazy regex caches)
    assert_eq!(policies.decide(&request).rule.as_deref(), Some("hit"));
    assert_eq!(policies.decide(&miss).effect, DecisionEffect::NotApplicable);
    let before = allocations();
    for _ in 0..1000 {
        let d = policies.decide(&request);
        assert_eq!(d.effect, DecisionEffect::Permit);
        let d = policies.decide(&miss);
        assert_eq!(d.effect, DecisionEffect::NotApplicable);
    }
    assert_eq!(allocations() - before, 0, "allocations in 2000 decisions");
    // the counter does count
    drop(std::hint::black_box(Vec::<u8>::with_capacity(8)));
    assert_eq!(allocations() - before, 1);
}
