//! String patterns of the policy language, compiled once.
//!
//! `*` matches anything, `prefix*` a prefix, `*suffix` a suffix, `re:<regex>` a
//! regular expression over the whole string; anything else is matched exactly. A
//! `*` anywhere else is refused (it would look like a glob that does not work).

use regex::{Regex, RegexBuilder};

/// Longest pattern accepted, in bytes (the longest address is 2 KiB).
pub const MAX_PATTERN_LEN: usize = 2048;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Regex(Box<Regex>),
}

/// A key a pattern can be indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexKey<'a> {
    /// The exact string.
    Exact(&'a str),
    /// The `scheme://authority` every match starts with.
    Authority(&'a str),
}

impl Pattern {
    /// Compiles `text`; regexes are limited to `regex_size` bytes of compiled program.
    pub(crate) fn compile(text: &str, regex_size: usize) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty pattern".to_owned());
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
        }
        if let Some(re) = text.strip_prefix("re:") {
            return RegexBuilder::new(&format!("^(?:{re})$"))
                .size_limit(regex_size)
                .build()
                .map(|r| Pattern::Regex(Box::new(r)))
                .map_err(|e| format!("invalid regex: {e}"));
        }
        if text == "*" {
            return Ok(Pattern::Any);
        }
        let inner_star = |s: &str| s.contains('*');
        if let Some(p) = text.strip_suffix('*') {
            if inner_star(p) {
                return Err("'*' may only start or end a pattern".to_owned());
            }
            return Ok(Pattern::Prefix(p.into()));
        }
        if let Some(s) = text.strip_prefix('*') {
            if inner_star(s) {
                return Err("'*' may only start or end a pattern".to_owned());
            }
            return Ok(Pattern::Suffix(s.into()));
        }
        if inner_star(text) {
            return Err("'*' may only start or end a pattern".to_owned());
        }
        Ok(Pattern::Exact(text.into()))
    }

    /// True if `s` matches.
    #[inline]
    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => **e == *s,
            Pattern::Prefix(p) => s.starts_with(&**p),
            Pattern::Suffix(x) => s.ends_with(&**x),
            Pattern::Regex(r) => r.is_match(s),
        }
    }

    /// The key an address pattern can be indexed by: its exact text, or the
    /// `scheme://authority` of a prefix that contains a whole authority.
    pub(crate) fn index_key(&self) -> Option<IndexKey<'_>> {
        match self {
            Pattern::Exact(e) => Some(IndexKey::Exact(e)),
            Pattern::Prefix(p) => {
                let (auth, complete) = authority(p);
                complete.then_some(IndexKey::Authority(auth))
            }
            _ => None,
        }
    }
}

/// The `scheme://authority` part of an address (`hyperty://a.org` of
/// `hyperty://a.org/x`), and whether the authority is complete (a `/` follows it).
/// Addresses without `://` (`mn:/…`) have no authority: `("", false)`.
#[inline]
pub(crate) fn authority(s: &str) -> (&str, bool) {
    match scheme_end(s) {
        None => ("", false),
        Some(i) => match s[i + 3..].find('/') {
            Some(j) => (&s[..i + 3 + j], true),
            None => (s, false),
        },
    }
}

/// The position of the `://` after the scheme. A scheme contains no `:`, so it is
/// the first `:` (a byte search, cheaper than a substring search).
#[inline]
pub(crate) fn scheme_end(s: &str) -> Option<usize> {
    let i = s.find(':')?;
    (s.as_bytes().get(i + 1..i + 3) == Some(b"//")).then_some(i)
}

/// A fast, unkeyed hasher (rustc's Fx) for the rule indexes. Their keys come from
/// policy authors, not from messages, so nobody can choose colliding keys; message
/// addresses are only looked up.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // the length first, so that zero padding cannot make two keys equal
        self.add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::compile(s, 1 << 20).unwrap()
    }

    #[test]
    fn kinds() {
        assert!(p("*").matches("anything"));
        assert!(p("hyperty://a.org/*").matches("hyperty://a.org/x"));
        assert!(!p("hyperty://a.org/*").matches("hyperty://a.org.evil/x"));
        assert!(p("*.a.org").matches("x.a.org"));
        assert!(!p("*.a.org").matches("a.org"));
        assert!(p("a.org").matches("a.org"));
        assert!(!p("a.org").matches("a.org2"));
        let re = p("re:hyperty://[a-z]+\\.org/.*");
        assert!(re.matches("hyperty://b.org/1"));
        // regexes are anchored: a match inside the string is not enough
        assert!(!re.matches("xhyperty://b.org/1"));
        assert!(!p("re:a").matches("ba"));
    }

    #[test]
    fn refusals() {
        for bad in ["", "a*b", "**", "*a*", "re:(", "re:a{999999}"] {
            assert!(Pattern::compile(bad, 1 << 16).is_err(), "{bad}");
        }
        assert!(Pattern::compile(&"a".repeat(MAX_PATTERN_LEN + 1), 1 << 16).is_err());
    }

    #[test]
    fn scheme_ends() {
        assert_eq!(scheme_end("hyperty://a"), Some(7));
        assert_eq!(scheme_end("mn:/session"), None);
        assert_eq!(scheme_end("a:b://c"), None);
        assert_eq!(scheme_end("x"), None);
        assert_eq!(scheme_end("x:"), None);
    }

    #[test]
    fn fx_hashes_differ_by_content_and_length() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = |s: &str| BuildHasherDefault::<FxHasher>::default().hash_one(s);
        assert_ne!(h("hyperty://a.org/1"), h("hyperty://a.org/2"));
        assert_ne!(h("a"), h("a\0"));
        assert_eq!(h("same"), h("same"));
    }

    #[test]
    fn authorities_and_index_keys() {
        assert_eq!(authority("hyperty://a.org/x/y"), ("hyperty://a.org", true));
        assert_eq!(authority("hyperty://a.org"), ("hyperty://a.org", false));
        assert_eq!(authority("mn:/session"), ("", false));
        assert_eq!(
            p("hyperty://a.org/*").index_key(),
            Some(IndexKey::Authority("hyperty://a.org"))
        );
        assert_eq!(p("hyperty://a.o*").index_key(), None);
        assert_eq!(p("x").index_key(), Some(IndexKey::Exact("x")));
        assert_eq!(p("*x").index_key(), None);
    }
}
