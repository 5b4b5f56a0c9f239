//! Policy files (`PolicySet::parse` from TOML and JSON, then `CompiledPolicies::compile`):
//! never panic, whatever the text; a set that parses serialises to JSON that
//! parses back to the same set, and compiles the same way.
#![no_main]

use hyperty_actors::policy::{CompileOptions, CompiledPolicies, Format, PolicySet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Toml
    } else {
        Format::Json
    };
    let Ok(set) = PolicySet::parse(text, format) else {
        return;
    };
    let json = match serde_json::to_string(&set) {
        Ok(j) => j,
        Err(e) => panic!("a parsed set does not serialise: {e}"),
    };
    let again = match PolicySet::from_json(&json) {
        Ok(s) => s,
        Err(e) => panic!("{json} (from {text}) does not parse back: {e}"),
    };
    assert_eq!(again, set, "the round trip changed {text}");
    let options = CompileOptions::default();
    let compiled = CompiledPolicies::compile(std::slice::from_ref(&set), &options);
    let recompiled = CompiledPolicies::compile(std::slice::from_ref(&again), &options);
    assert_eq!(compiled.is_ok(), recompiled.is_ok());
});
