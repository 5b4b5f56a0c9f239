//! The compiled matcher: policy sets turned into indexed rules and a `decide`
//! function that runs on every message.
//!
//! [`CompiledPolicies::compile`] validates [`PolicySet`]s (every error names the
//! set, the rule and the field) and builds, per set, an index of its rules by exact
//! `to`, `to` authority (`hyperty://a.org` of a `hyperty://a.org/*` pattern), exact
//! `from`, `from` authority, sender and recipient domain (exact, or `.a.org` for
//! `*.a.org`) and message type; only rules none of these can index are scanned. [`CompiledPolicies::decide`] looks up the candidates of a
//! [`PolicyRequest`] in those indexes, visits them in rule order and combines the
//! applicable ones. It allocates nothing and runs no regex unless a candidate rule
//! uses a `re:` pattern.
//!
//! Snapshots are immutable (except for rate counters, which live behind a mutex per
//! rate rule and survive recompilation when the rule is unchanged); the PDP
//! publishes a new one on every change.
//!
//! ```
//! use hyperty_actors::policy::{CompileOptions, CompiledPolicies, DecisionEffect, PolicyRequest, PolicySet};
//!
//! let set = PolicySet::from_json(r#"{"id": "p", "rules": [
//!     {"id": "no-evil", "effect": "deny", "target": {"from": ["hyperty://evil.org/*"]}},
//!     {"id": "friends", "effect": "permit", "target": {"domains": ["*.friends.org"]}}
//! ]}"#).unwrap();
//! let policies = CompiledPolicies::compile(&[set], &CompileOptions::default()).unwrap();
//!
//! let d = policies.decide(&PolicyRequest::new("create", "hyperty://evil.org/x", "hyperty://a.org/y"));
//! assert_eq!(d.effect, DecisionEffect::Deny);
//! assert_eq!(d.rule.as_deref(), Some("no-evil"));
//! let d = policies.decide(&PolicyRequest::new("read", "hyperty://b.friends.org/1", "hyperty://a.org/y"));
//! assert_eq!(d.effect, DecisionEffect::Permit);
//! let d = policies.decide(&PolicyRequest::new("read", "hyperty://c.org/1", "hyperty://a.org/y"));
//! assert_eq!(d.effect, DecisionEffect::NotApplicable);
//! ```

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::model::{
    Combining, Conditions, Effect, Obligation, PolicyDirection, PolicySet, Rule, Target,
    TimeWindow, Weekday,
};
use super::pattern::{scheme_end, FxHasher, IndexKey, Pattern};
use super::PolicyError;
use crate::bus::Direction;

/// Default bound of the number of policy sets.
pub const DEFAULT_MAX_POLICY_SETS: usize = 1_000;
/// Default bound of the number of rules over all sets.
pub const DEFAULT_MAX_RULES: usize = 100_000;
/// Default bound of the senders a rate rule keeps counters for.
pub const DEFAULT_MAX_RATE_ENTRIES: usize = 10_000;
/// Default bound of the compiled size of one `re:` pattern, in bytes.
pub const DEFAULT_MAX_REGEX_SIZE: usize = 1 << 20;
/// Most entries in one target field.
pub const MAX_PATTERNS_PER_FIELD: usize = 10_000;
/// Longest rate window accepted (one week), in milliseconds.
pub const MAX_RATE_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;

/// Bounds of what a PDP accepts and keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyLimits {
    /// Most policy sets.
    pub max_policy_sets: usize,
    /// Most rules over all sets.
    pub max_rules: usize,
    /// Most senders a rate rule keeps counters for; beyond it, expired counters are
    /// dropped first, then the oldest.
    pub max_rate_entries: usize,
    /// Largest compiled `re:` pattern, in bytes.
    pub max_regex_size: usize,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            max_policy_sets: DEFAULT_MAX_POLICY_SETS,
            max_rules: DEFAULT_MAX_RULES,
            max_rate_entries: DEFAULT_MAX_RATE_ENTRIES,
            max_regex_size: DEFAULT_MAX_REGEX_SIZE,
        }
    }
}

/// How a snapshot is compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// How the sets' decisions combine.
    pub combining: Combining,
    /// What enforcement points do when no set applies ([`DecisionEffect::NotApplicable`]).
    pub default_behaviour: Effect,
    /// Bounds.
    pub limits: PolicyLimits,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            combining: Combining::DenyOverrides,
            default_behaviour: Effect::Permit,
            limits: PolicyLimits::default(),
        }
    }
}

/// What a decision request is about. Every string is borrowed from the message, so
/// building one allocates nothing; [`PolicyRequest::new`] derives the schemes and
/// domains from `from` and `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyRequest<'a> {
    /// The message type (`create`, `update`, …).
    pub kind: &'a str,
    /// The sender address.
    pub from: &'a str,
    /// The recipient address (one request per recipient).
    pub to: &'a str,
    /// The sender's scheme (`hyperty`, `comm`, …; `mn` for `mn:/…`).
    pub from_scheme: &'a str,
    /// The sender's domain (authority); empty for `mn:/…`.
    pub from_domain: &'a str,
    /// The recipient's scheme.
    pub to_scheme: &'a str,
    /// The recipient's domain; empty for `mn:/…`.
    pub to_domain: &'a str,
    /// The data-object scheme of the recipient, else of the sender, if either is a
    /// data object.
    pub data_scheme: Option<&'a str>,
    /// The sender's verified user URL, if any.
    pub user: Option<&'a str>,
    /// True if the sender carries an identity assertion the verifier accepted.
    pub asserted: bool,
    /// Where the message travels (`None` where the notion does not apply, e.g. on
    /// the node; rules with `directions` then do not match).
    pub direction: Option<Direction>,
    /// Wall-clock time, milliseconds since the Unix epoch (UTC).
    pub now_ms: u64,
}

/// Schemes that are not data-object schemes (see [`crate::address`]).
const NON_DATA_SCHEMES: &[&str] = &[
    "hyperty",
    "hyperty-runtime",
    "runtime",
    "domain",
    "domain-idp",
    "user",
    "user-guid",
    "acct",
    "global",
    "hyperty-catalogue",
    "mn",
];

/// The scheme of an address (`mn` for `mn:/…`, empty if there is none).
#[inline]
pub fn scheme_of(address: &str) -> &str {
    if address.starts_with("mn:/") {
        return "mn";
    }
    scheme_end(address).map_or("", |i| &address[..i])
}

/// The domain (authority) of an address, empty if there is none.
#[inline]
pub fn domain_of(address: &str) -> &str {
    match scheme_end(address) {
        None => "",
        Some(i) => {
            let rest = &address[i + 3..];
            &rest[..rest.find('/').unwrap_or(rest.len())]
        }
    }
}

/// The scheme of `address` if it is a data object.
#[inline]
pub fn data_scheme_of(address: &str) -> Option<&str> {
    data_scheme(scheme_of(address))
}

#[inline]
fn data_scheme(scheme: &str) -> Option<&str> {
    (!scheme.is_empty() && !NON_DATA_SCHEMES.contains(&scheme)).then_some(scheme)
}

/// Scheme and domain of an address, in one pass.
#[inline]
fn split(address: &str) -> (&str, &str) {
    if address.starts_with("mn:/") {
        return ("mn", "");
    }
    match scheme_end(address) {
        None => ("", ""),
        Some(i) => {
            let rest = &address[i + 3..];
            (&address[..i], &rest[..rest.find('/').unwrap_or(rest.len())])
        }
    }
}

impl<'a> PolicyRequest<'a> {
    /// A request about a message of type `kind` from `from` to `to`, with no
    /// identity, no direction and time 0 (set them with the `with_`/[`at`] methods).
    ///
    /// [`at`]: PolicyRequest::at
    pub fn new(kind: &'a str, from: &'a str, to: &'a str) -> PolicyRequest<'a> {
        let (from_scheme, from_domain) = split(from);
        let (to_scheme, to_domain) = split(to);
        PolicyRequest {
            kind,
            from,
            to,
            from_scheme,
            from_domain,
            to_scheme,
            to_domain,
            data_scheme: data_scheme(to_scheme).or_else(|| data_scheme(from_scheme)),
            user: None,
            asserted: false,
            direction: None,
            now_ms: 0,
        }
    }

    /// Sets the verified identity: its user URL, and whether an assertion was verified.
    pub fn with_identity(mut self, user: Option<&'a str>, asserted: bool) -> Self {
        self.user = user;
        self.asserted = asserted;
        self
    }

    /// Sets the direction.
    pub fn with_direction(mut self, direction: Direction) -> Self {
        self.direction = Some(direction);
        self
    }

    /// Sets the time.
    pub fn at(mut self, now_ms: u64) -> Self {
        self.now_ms = now_ms;
        self
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionEffect {
    /// A rule (or a set default) permits the message.
    Permit,
    /// A rule (or a set default) denies it.
    Deny,
    /// Nothing applies; enforcement points fall back to their default behaviour.
    NotApplicable,
}

/// A decision: its effect, the set and rule that produced it, and the obligations
/// the enforcement point must fulfil. Cloning it copies reference counts only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Permit, deny or not applicable.
    pub effect: DecisionEffect,
    /// The id of the deciding policy set.
    pub policy: Option<Arc<str>>,
    /// The id of the deciding rule (`None` for a set default or not applicable).
    pub rule: Option<Arc<str>>,
    /// The deciding rule's obligations.
    pub obligations: Arc<[Obligation]>,
}

impl Decision {
    /// True if an enforcement point whose default behaviour is `default` lets the
    /// message pass.
    pub fn permits(&self, default: Effect) -> bool {
        match self.effect {
            DecisionEffect::Permit => true,
            DecisionEffect::Deny => false,
            DecisionEffect::NotApplicable => default == Effect::Permit,
        }
    }
}

/// Per-sender message counters of one rate rule, bounded.
pub(crate) struct RateTable {
    max: u32,
    window_ms: u64,
    capacity: usize,
    keys: RandomState,
    windows: Mutex<HashMap<u64, (u64, u32)>>,
}

impl fmt::Debug for RateTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateTable")
            .field("max", &self.max)
            .field("window_ms", &self.window_ms)
            .field("senders", &self.len())
            .finish()
    }
}

impl RateTable {
    fn new(max: u32, window_ms: u64, capacity: usize) -> RateTable {
        RateTable {
            max,
            window_ms,
            capacity: capacity.max(1),
            keys: RandomState::new(),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a message of `sender` at `now`; true if it is beyond the limit.
    fn exceeded(&self, sender: &str, now: u64) -> bool {
        // Senders are keyed by a keyed 64-bit hash: no allocation per message.
        let key = self.keys.hash_one(sender);
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let expired = |start: u64| now < start || now - start >= self.window_ms;
        if let Some((start, count)) = w.get_mut(&key) {
            if expired(*start) {
                *start = now;
                *count = 1;
            } else {
                *count = count.saturating_add(1);
            }
            return *count > self.max;
        }
        if w.len() >= self.capacity {
            w.retain(|_, (start, _)| !expired(*start));
            if w.len() >= self.capacity {
                let oldest = w.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    w.remove(&k);
                }
            }
        }
        w.insert(key, (now, 1));
        1 > self.max
    }

    fn len(&self) -> usize {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[derive(Debug)]
struct CompiledTarget {
    types: Box<[Box<str>]>,
    from: Box<[Pattern]>,
    to: Box<[Pattern]>,
    schemes: Box<[Box<str>]>,
    domains: Box<[Pattern]>,
    to_domains: Box<[Pattern]>,
    users: Box<[Pattern]>,
    data_schemes: Box<[Box<str>]>,
    /// Bit set of [`dir_bit`]; 0: any.
    directions: u8,
}

#[inline]
fn any_pattern(patterns: &[Pattern], s: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(s))
}

#[inline]
fn any_str(list: &[Box<str>], s: &str) -> bool {
    list.is_empty() || list.iter().any(|x| **x == *s)
}

fn dir_bit(d: Direction) -> u8 {
    match d {
        Direction::Local => 1,
        Direction::Outgoing => 2,
        Direction::Incoming => 4,
    }
}

impl CompiledTarget {
    #[inline]
    fn matches(&self, r: &PolicyRequest<'_>) -> bool {
        any_str(&self.types, r.kind)
            && any_pattern(&self.to, r.to)
            && any_pattern(&self.from, r.from)
            && any_str(&self.schemes, r.from_scheme)
            && any_pattern(&self.domains, r.from_domain)
            && any_pattern(&self.to_domains, r.to_domain)
            && (self.users.is_empty() || r.user.is_some_and(|u| any_pattern(&self.users, u)))
            && (self.data_schemes.is_empty()
                || r.data_scheme
                    .is_some_and(|s| any_str(&self.data_schemes, s)))
            && (self.directions == 0
                || r.direction
                    .is_some_and(|d| self.directions & dir_bit(d) != 0))
    }
}

#[derive(Debug)]
struct CompiledConditions {
    /// Seconds of the day: from (inclusive), to (exclusive).
    window: Option<(u32, u32)>,
    /// Bit 0 = Monday; 0: any day.
    weekdays: u8,
    offset_s: i64,
    asserted: Option<bool>,
    rate: Option<Arc<RateTable>>,
}

impl CompiledConditions {
    #[inline]
    fn hold(&self, r: &PolicyRequest<'_>) -> bool {
        if self.asserted.is_some_and(|a| a != r.asserted) {
            return false;
        }
        if self.window.is_some() || self.weekdays != 0 {
            let local = i64::try_from(r.now_ms / 1000).unwrap_or(i64::MAX / 2) + self.offset_s;
            let day = local.div_euclid(86_400);
            // rem_euclid of 86 400 always fits in u32
            let secs = u32::try_from(local.rem_euclid(86_400)).unwrap_or(0);
            if let Some((from, to)) = self.window {
                let inside = if from < to {
                    secs >= from && secs < to
                } else {
                    secs >= from || secs < to
                };
                if !inside {
                    return false;
                }
            }
            if self.weekdays != 0 {
                // 1970-01-01 was a Thursday (bit 3 with Monday = bit 0).
                let weekday = (day + 3).rem_euclid(7);
                if self.weekdays & (1 << weekday) == 0 {
                    return false;
                }
            }
        }
        // Last: only messages the rule otherwise applies to are counted.
        match &self.rate {
            Some(rate) => rate.exceeded(r.from, r.now_ms),
            None => true,
        }
    }
}

#[derive(Debug)]
struct CompiledRule {
    id: Arc<str>,
    effect: Effect,
    target: CompiledTarget,
    conditions: CompiledConditions,
    obligations: Arc<[Obligation]>,
}

/// Rule positions (increasing) by key.
type Index = HashMap<Box<str>, Vec<u32>, BuildHasherDefault<FxHasher>>;

/// Rule indexes of one set: each list holds rule positions in increasing order.
#[derive(Debug, Default)]
struct RuleIndex {
    to_exact: Index,
    to_auth: Index,
    from_exact: Index,
    from_auth: Index,
    /// Sender domains: exact (`a.org`) and dot suffixes (`.a.org` for `*.a.org`).
    from_domain: Index,
    /// Recipient domains, the same way.
    to_domain: Index,
    types: Index,
    scan: Vec<u32>,
}

fn push(map: &mut Index, key: &str, i: u32) {
    let list = map.entry(key.into()).or_default();
    if list.last() != Some(&i) {
        list.push(i);
    }
}

/// The index keys of every pattern, if all of them have one.
fn all_keys(patterns: &[Pattern]) -> Option<Vec<IndexKey<'_>>> {
    if patterns.is_empty() {
        return None;
    }
    patterns.iter().map(Pattern::index_key).collect()
}

/// The list of the `scheme://domain` that starts `address` (when a `/` follows it).
#[inline]
fn by_auth<'a>(map: &'a Index, address: &str, scheme: &str, domain: &str) -> &'a [u32] {
    if map.is_empty() || domain.is_empty() {
        return &[];
    }
    let end = scheme.len() + 3 + domain.len();
    match (address.as_bytes().get(end), address.get(..end)) {
        (Some(b'/'), Some(auth)) => lookup(map, auth),
        _ => &[],
    }
}

#[inline]
fn lookup<'a>(map: &'a Index, key: &str) -> &'a [u32] {
    if map.is_empty() || key.is_empty() {
        return &[];
    }
    map.get(key).map_or(&[], Vec::as_slice)
}

impl RuleIndex {
    fn add(&mut self, i: u32, t: &CompiledTarget) {
        let by = |keys: Vec<IndexKey<'_>>, exact: &mut Index, auth: &mut Index| {
            for k in keys {
                match k {
                    IndexKey::Exact(s) => push(exact, s, i),
                    IndexKey::Authority(s) => push(auth, s, i),
                }
            }
        };
        if let Some(keys) = all_keys(&t.to) {
            by(keys, &mut self.to_exact, &mut self.to_auth);
        } else if let Some(keys) = all_keys(&t.from) {
            by(keys, &mut self.from_exact, &mut self.from_auth);
        } else if let Some(keys) = all_domain_keys(&t.domains) {
            keys.iter().for_each(|k| push(&mut self.from_domain, k, i));
        } else if let Some(keys) = all_domain_keys(&t.to_domains) {
            keys.iter().for_each(|k| push(&mut self.to_domain, k, i));
        } else if !t.types.is_empty() {
            for ty in t.types.iter() {
                push(&mut self.types, ty, i);
            }
        } else {
            self.scan.push(i);
        }
    }

    #[inline]
    fn candidates(&self, r: &PolicyRequest<'_>) -> Candidates<'_> {
        let [f0, f1, f2, f3, f4] = by_domain(&self.from_domain, r.from_domain);
        let [t0, t1, t2, t3, t4] = by_domain(&self.to_domain, r.to_domain);
        Candidates {
            lists: [
                lookup(&self.to_exact, r.to),
                by_auth(&self.to_auth, r.to, r.to_scheme, r.to_domain),
                lookup(&self.from_exact, r.from),
                by_auth(&self.from_auth, r.from, r.from_scheme, r.from_domain),
                f0,
                f1,
                f2,
                f3,
                f4,
                t0,
                t1,
                t2,
                t3,
                t4,
                lookup(&self.types, r.kind),
                &self.scan,
            ],
            last: None,
        }
    }
}

/// How many labels a `*.suffix` domain pattern may have to be indexed (more are
/// scanned); a lookup tries the domain and its last this many dot suffixes.
const MAX_INDEXED_SUFFIX_LABELS: usize = 4;

/// The index keys of domain patterns, if all of them have one: the exact domain,
/// or `.suffix` for `*.suffix`.
fn all_domain_keys(patterns: &[Pattern]) -> Option<Vec<&str>> {
    if patterns.is_empty() {
        return None;
    }
    patterns
        .iter()
        .map(|p| match p {
            Pattern::Exact(d) if !d.starts_with('.') => Some(&**d),
            Pattern::Suffix(x)
                if x.starts_with('.')
                    && x.len() > 1
                    && x.matches('.').count() <= MAX_INDEXED_SUFFIX_LABELS =>
            {
                Some(&**x)
            }
            _ => None,
        })
        .collect()
}

/// The lists of a domain and of its last dot suffixes (`.b.org`, `.org`).
#[inline]
fn by_domain<'a>(map: &'a Index, domain: &str) -> [&'a [u32]; MAX_INDEXED_SUFFIX_LABELS + 1] {
    let mut out: [&[u32]; MAX_INDEXED_SUFFIX_LABELS + 1] = [&[]; MAX_INDEXED_SUFFIX_LABELS + 1];
    if map.is_empty() || domain.is_empty() {
        return out;
    }
    out[0] = lookup(map, domain);
    for (slot, (i, _)) in out[1..].iter_mut().zip(domain.rmatch_indices('.')) {
        *slot = lookup(map, &domain[i..]);
    }
    out
}

/// Merges the candidate lists in rule order, without duplicates.
struct Candidates<'a> {
    lists: [&'a [u32]; 16],
    last: Option<u32>,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (k, list) in self.lists.iter().enumerate() {
                if let Some(&head) = list.first() {
                    if best.is_none_or(|(_, b)| head < b) {
                        best = Some((k, head));
                    }
                }
            }
            let (k, head) = best?;
            self.lists[k] = &self.lists[k][1..];
            if self.last == Some(head) {
                continue;
            }
            self.last = Some(head);
            return Some(head as usize);
        }
    }
}

#[derive(Debug)]
struct CompiledSet {
    id: Arc<str>,
    combining: Combining,
    default: Option<Effect>,
    rules: Vec<CompiledRule>,
    index: RuleIndex,
}

#[derive(Clone, Copy)]
struct Hit<'p> {
    effect: Effect,
    set: &'p CompiledSet,
    rule: Option<&'p CompiledRule>,
}

/// Combines applicable decisions; `push` says when the outcome is final.
struct Combiner<'p> {
    algorithm: Combining,
    decided: Option<Hit<'p>>,
    fallback: Option<Hit<'p>>,
}

impl<'p> Combiner<'p> {
    fn new(algorithm: Combining) -> Self {
        Combiner {
            algorithm,
            decided: None,
            fallback: None,
        }
    }

    /// Adds an applicable decision; true once nothing can change the outcome.
    #[inline]
    fn push(&mut self, hit: Hit<'p>) -> bool {
        let wins = match self.algorithm {
            Combining::FirstApplicable => true,
            Combining::DenyOverrides => hit.effect == Effect::Deny,
            Combining::PermitOverrides => hit.effect == Effect::Permit,
        };
        if wins {
            self.decided = Some(hit);
            return true;
        }
        if self.fallback.is_none() {
            self.fallback = Some(hit);
        }
        false
    }

    fn result(self) -> Option<Hit<'p>> {
        self.decided.or(self.fallback)
    }
}

impl CompiledSet {
    #[inline]
    fn decide(&self, r: &PolicyRequest<'_>) -> Option<Hit<'_>> {
        let mut c = Combiner::new(self.combining);
        for i in self.index.candidates(r) {
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            if rule.target.matches(r) && rule.conditions.hold(r) {
                let hit = Hit {
                    effect: rule.effect,
                    set: self,
                    rule: Some(rule),
                };
                if c.push(hit) {
                    break;
                }
            }
        }
        c.result().or_else(|| {
            self.default.map(|effect| Hit {
                effect,
                set: self,
                rule: None,
            })
        })
    }
}

/// An immutable, compiled snapshot of a PDP's policy sets.
#[derive(Debug)]
pub struct CompiledPolicies {
    sets: Vec<CompiledSet>,
    combining: Combining,
    default_behaviour: Effect,
    rules: usize,
    needs_identity: bool,
    needs_time: bool,
    attaches_identity: bool,
    no_obligations: Arc<[Obligation]>,
}

impl Default for CompiledPolicies {
    fn default() -> Self {
        CompiledPolicies::empty(Combining::DenyOverrides, Effect::Permit)
    }
}

impl CompiledPolicies {
    /// A snapshot without policies: every decision is not applicable.
    pub fn empty(combining: Combining, default_behaviour: Effect) -> CompiledPolicies {
        CompiledPolicies {
            sets: Vec::new(),
            combining,
            default_behaviour,
            rules: 0,
            needs_identity: false,
            needs_time: false,
            attaches_identity: false,
            no_obligations: Arc::from(Vec::new()),
        }
    }

    /// Validates and compiles `sets` (in evaluation order).
    pub fn compile(
        sets: &[PolicySet],
        options: &CompileOptions,
    ) -> Result<CompiledPolicies, PolicyError> {
        Self::compile_after(sets, options, None)
    }

    /// Like [`compile`](Self::compile), keeping the rate counters of rules of
    /// `previous` that are unchanged.
    pub(crate) fn compile_after(
        sets: &[PolicySet],
        options: &CompileOptions,
        previous: Option<&CompiledPolicies>,
    ) -> Result<CompiledPolicies, PolicyError> {
        let limits = &options.limits;
        if sets.len() > limits.max_policy_sets {
            return Err(PolicyError::TooMany {
                what: "policy sets",
                limit: limits.max_policy_sets,
            });
        }
        let total: usize = sets.iter().map(|s| s.rules.len()).sum();
        if total > limits.max_rules {
            return Err(PolicyError::TooMany {
                what: "rules",
                limit: limits.max_rules,
            });
        }
        let mut out = CompiledPolicies::empty(options.combining, options.default_behaviour);
        out.rules = total;
        let mut seen = std::collections::HashSet::new();
        for set in sets {
            if set.id.is_empty() {
                return Err(invalid(&set.id, None, "id", "must not be empty"));
            }
            if !seen.insert(set.id.as_str()) {
                return Err(invalid(&set.id, None, "id", "duplicate policy set id"));
            }
            let compiled = compile_set(set, limits, previous, &mut out)?;
            out.sets.push(compiled);
        }
        Ok(out)
    }

    /// Decides about one message and one recipient. Allocates nothing.
    pub fn decide(&self, request: &PolicyRequest<'_>) -> Decision {
        let mut c = Combiner::new(self.combining);
        for set in &self.sets {
            if let Some(hit) = set.decide(request) {
                if c.push(hit) {
                    break;
                }
            }
        }
        match c.result() {
            None => Decision {
                effect: DecisionEffect::NotApplicable,
                policy: None,
                rule: None,
                obligations: self.no_obligations.clone(),
            },
            Some(hit) => Decision {
                effect: match hit.effect {
                    Effect::Permit => DecisionEffect::Permit,
                    Effect::Deny => DecisionEffect::Deny,
                },
                policy: Some(hit.set.id.clone()),
                rule: hit.rule.map(|r| r.id.clone()),
                obligations: hit
                    .rule
                    .map_or_else(|| self.no_obligations.clone(), |r| r.obligations.clone()),
            },
        }
    }

    /// What enforcement points do when nothing applies.
    pub fn default_behaviour(&self) -> Effect {
        self.default_behaviour
    }

    /// How the sets combine.
    pub fn combining(&self) -> Combining {
        self.combining
    }

    /// Number of rules over all sets.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// The ids of the sets, in evaluation order.
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().map(|s| &*s.id)
    }

    /// True if some rule looks at the sender's identity (users, `asserted`,
    /// identity obligations): enforcement points must verify `body.identity`.
    pub fn needs_identity(&self) -> bool {
        self.needs_identity
    }

    /// True if some rule has a time, weekday or rate condition: enforcement points
    /// must read the clock.
    pub fn needs_time(&self) -> bool {
        self.needs_time
    }

    /// True if some rule attaches verified identities to messages.
    pub fn attaches_identity(&self) -> bool {
        self.attaches_identity
    }

    fn rate_table(&self, set: &str, rule: &str) -> Option<&Arc<RateTable>> {
        let s = self.sets.iter().find(|s| &*s.id == set)?;
        s.rules
            .iter()
            .find(|r| &*r.id == rule)?
            .conditions
            .rate
            .as_ref()
    }
}

fn invalid(
    policy: &str,
    rule: Option<&str>,
    field: &str,
    reason: impl Into<String>,
) -> PolicyError {
    PolicyError::Invalid {
        policy: policy.to_owned(),
        rule: rule.map(str::to_owned),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn compile_set(
    set: &PolicySet,
    limits: &PolicyLimits,
    previous: Option<&CompiledPolicies>,
    out: &mut CompiledPolicies,
) -> Result<CompiledSet, PolicyError> {
    let mut rules = Vec::with_capacity(set.rules.len());
    let mut index = RuleIndex::default();
    let mut ids = std::collections::HashSet::new();
    for (i, rule) in set.rules.iter().enumerate() {
        let fail = |field: &str, reason: String| invalid(&set.id, Some(&rule.id), field, reason);
        if rule.id.is_empty() {
            return Err(invalid(
                &set.id,
                Some(&format!("rules[{i}]")),
                "id",
                "must not be empty",
            ));
        }
        if !ids.insert(rule.id.as_str()) {
            return Err(fail("id", "duplicate rule id in this set".to_owned()));
        }
        let target = compile_target(&rule.target, limits).map_err(|(f, r)| fail(&f, r))?;
        let conditions =
            compile_conditions(set, rule, limits, previous).map_err(|(f, r)| fail(&f, r))?;
        check_obligations(&rule.obligations, limits).map_err(|(f, r)| fail(&f, r))?;
        out.needs_identity |= !target.users.is_empty()
            || conditions.asserted.is_some()
            || rule.obligations.iter().any(|o| {
                matches!(
                    o,
                    Obligation::RequireAssertion { .. } | Obligation::AttachIdentity
                )
            });
        out.attaches_identity |= rule
            .obligations
            .iter()
            .any(|o| matches!(o, Obligation::AttachIdentity));
        out.needs_time |=
            conditions.window.is_some() || conditions.weekdays != 0 || conditions.rate.is_some();
        let position = u32::try_from(i).map_err(|_| PolicyError::TooMany {
            what: "rules in one set",
            limit: u32::MAX as usize,
        })?;
        index.add(position, &target);
        rules.push(CompiledRule {
            id: Arc::from(rule.id.as_str()),
            effect: rule.effect,
            target,
            conditions,
            obligations: Arc::from(rule.obligations.clone()),
        });
    }
    Ok(CompiledSet {
        id: Arc::from(set.id.as_str()),
        combining: set.combining,
        default: set.default,
        rules,
        index,
    })
}

type FieldError = (String, String);

fn patterns(
    field: &str,
    list: &[String],
    limits: &PolicyLimits,
) -> Result<Box<[Pattern]>, FieldError> {
    if list.len() > MAX_PATTERNS_PER_FIELD {
        return Err((
            field.to_owned(),
            format!("more than {MAX_PATTERNS_PER_FIELD} entries"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            Pattern::compile(p, limits.max_regex_size).map_err(|e| (format!("{field}[{i}]"), e))
        })
        .collect()
}

fn words(field: &str, list: &[String]) -> Result<Box<[Box<str>]>, FieldError> {
    if list.len() > MAX_PATTERNS_PER_FIELD {
        return Err((
            field.to_owned(),
            format!("more than {MAX_PATTERNS_PER_FIELD} entries"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, w)| {
            if w.is_empty() || w.contains(char::is_whitespace) {
                Err((
                    format!("{field}[{i}]"),
                    "must be a non-empty word".to_owned(),
                ))
            } else {
                Ok(Box::from(w.as_str()))
            }
        })
        .collect()
}

fn compile_target(t: &Target, limits: &PolicyLimits) -> Result<CompiledTarget, FieldError> {
    Ok(CompiledTarget {
        types: words("target.types", &t.types)?,
        from: patterns("target.from", &t.from, limits)?,
        to: patterns("target.to", &t.to, limits)?,
        schemes: words("target.schemes", &t.schemes)?,
        domains: patterns("target.domains", &t.domains, limits)?,
        to_domains: patterns("target.to_domains", &t.to_domains, limits)?,
        users: patterns("target.users", &t.users, limits)?,
        data_schemes: words("target.data_schemes", &t.data_schemes)?,
        directions: t.directions.iter().fold(0, |acc, d| {
            acc | dir_bit(match d {
                PolicyDirection::Local => Direction::Local,
                PolicyDirection::Outgoing => Direction::Outgoing,
                PolicyDirection::Incoming => Direction::Incoming,
            })
        }),
    })
}

/// `HH:MM` or `HH:MM:SS` as seconds of the day; `24:00` only as an end.
fn parse_time(s: &str, end: bool) -> Result<u32, String> {
    let bad = || format!("'{s}' is not a time of day (HH:MM or HH:MM:SS)");
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let num = |p: &str| {
        p.parse::<u32>()
            .ok()
            .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
    };
    let h = num(parts[0]).ok_or_else(bad)?;
    let m = num(parts[1]).ok_or_else(bad)?;
    let sec = match parts.get(2) {
        Some(p) => num(p).ok_or_else(bad)?,
        None => 0,
    };
    if end && h == 24 && m == 0 && sec == 0 {
        return Ok(86_400);
    }
    if h > 23 || m > 59 || sec > 59 {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + sec)
}

fn weekday_bit(d: Weekday) -> u8 {
    1 << match d {
        Weekday::Mon => 0,
        Weekday::Tue => 1,
        Weekday::Wed => 2,
        Weekday::Thu => 3,
        Weekday::Fri => 4,
        Weekday::Sat => 5,
        Weekday::Sun => 6,
    }
}

fn compile_conditions(
    set: &PolicySet,
    rule: &Rule,
    limits: &PolicyLimits,
    previous: Option<&CompiledPolicies>,
) -> Result<CompiledConditions, FieldError> {
    let c: &Conditions = &rule.conditions;
    let window = match &c.time_of_day {
        None => None,
        Some(TimeWindow { from, to }) => {
            let f = parse_time(from, false)
                .map_err(|e| ("conditions.time_of_day.from".to_owned(), e))?;
            let t =
                parse_time(to, true).map_err(|e| ("conditions.time_of_day.to".to_owned(), e))?;
            if f == t {
                return Err((
                    "conditions.time_of_day".to_owned(),
                    "the window is empty (from equals to)".to_owned(),
                ));
            }
            Some((f, t))
        }
    };
    let weekdays = match &c.weekdays {
        None => 0,
        Some(days) if days.is_empty() => {
            return Err((
                "conditions.weekdays".to_owned(),
                "must name at least one day".to_owned(),
            ))
        }
        Some(days) => days.iter().fold(0, |acc, d| acc | weekday_bit(*d)),
    };
    let offset = c.utc_offset_minutes.unwrap_or(0);
    if offset.abs() >= 24 * 60 {
        return Err((
            "conditions.utc_offset_minutes".to_owned(),
            "must be within ±1439 minutes".to_owned(),
        ));
    }
    let rate = match &c.rate {
        None => None,
        Some(r) => {
            if r.max == 0 {
                return Err((
                    "conditions.rate.max".to_owned(),
                    "must be at least 1".to_owned(),
                ));
            }
            if r.window_ms == 0 || r.window_ms > MAX_RATE_WINDOW_MS {
                return Err((
                    "conditions.rate.window_ms".to_owned(),
                    format!("must be between 1 and {MAX_RATE_WINDOW_MS}"),
                ));
            }
            let kept = previous
                .and_then(|p| p.rate_table(&set.id, &rule.id))
                .filter(|t| {
                    t.max == r.max
                        && t.window_ms == r.window_ms
                        && t.capacity == limits.max_rate_entries.max(1)
                })
                .cloned();
            Some(kept.unwrap_or_else(|| {
                Arc::new(RateTable::new(r.max, r.window_ms, limits.max_rate_entries))
            }))
        }
    };
    Ok(CompiledConditions {
        window,
        weekdays,
        offset_s: i64::from(offset) * 60,
        asserted: c.asserted,
        rate,
    })
}

fn check_obligations(list: &[Obligation], limits: &PolicyLimits) -> Result<(), FieldError> {
    for (i, o) in list.iter().enumerate() {
        if let Obligation::RequireAssertion {
            domain: Some(d), ..
        } = o
        {
            let field = format!("obligations[{i}].domain");
            if d.starts_with("re:") {
                return Err((field, "regexes are not allowed here".to_owned()));
            }
            Pattern::compile(d, limits.max_regex_size).map_err(|e| (field, e))?;
        }
    }
    Ok(())
}

/// Matches a `require-assertion` domain pattern (`*`, `prefix*`, `*suffix`, exact)
/// without compiling it.
pub(crate) fn domain_pattern_matches(pattern: &str, domain: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(p) = pattern.strip_suffix('*') {
        domain.starts_with(p)
    } else if let Some(s) = pattern.strip_prefix('*') {
        domain.ends_with(s)
    } else {
        pattern == domain
    }
}

#[cfg(test)]
mod tests;
