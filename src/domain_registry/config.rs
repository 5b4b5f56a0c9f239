//! Limits of the domain registry.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::DomainRegistryError;

/// Named, bounded limits of a [`DomainRegistry`](super::DomainRegistry).
///
/// Times are whole seconds, like the wire field `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainRegistryConfig {
    /// Most entries one caller may hold: per authenticated identity (per runtime
    /// URL for an anonymous session), whatever users the entries name. A create
    /// beyond it answers 429.
    pub max_entries_per_user: usize,
    /// Most entries (hyperties and data objects together). A create beyond it answers 429.
    pub max_entries: usize,
    /// `expires` given to an entry whose create carries none, in seconds.
    pub default_expires_secs: u64,
    /// Largest `expires` honoured, in seconds; larger values are lowered to it.
    pub max_expires_secs: u64,
    /// How often expired entries are removed, in seconds. Requests also remove the
    /// entries that are due, so this only matters while the registry is idle.
    pub sweep_interval_secs: u64,
    /// Lets anyone read the registry over HTTP (`GET /registry/…`). When false
    /// (the default) and sessions must authenticate, a read needs a valid ID or
    /// device token (`Authorization: Bearer …`). Reads over the WebSocket are
    /// open to every session either way.
    pub public_reads: bool,
}

impl Default for DomainRegistryConfig {
    fn default() -> Self {
        DomainRegistryConfig {
            max_entries_per_user: 256,
            max_entries: 100_000,
            default_expires_secs: 3_600,
            max_expires_secs: 86_400,
            sweep_interval_secs: 5,
            public_reads: false,
        }
    }
}

impl DomainRegistryConfig {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), DomainRegistryError> {
        let bad = |what: &str| Err(DomainRegistryError::InvalidConfig(what.to_owned()));
        if self.max_entries == 0 || self.max_entries_per_user == 0 {
            return bad("max_entries and max_entries_per_user must be at least 1");
        }
        if self.default_expires_secs == 0 || self.max_expires_secs == 0 {
            return bad("default_expires_secs and max_expires_secs must be at least 1");
        }
        if self.default_expires_secs > self.max_expires_secs {
            return bad("default_expires_secs must not exceed max_expires_secs");
        }
        if self.sweep_interval_secs == 0 {
            return bad("sweep_interval_secs must be at least 1");
        }
        Ok(())
    }

    /// [`sweep_interval_secs`](Self::sweep_interval_secs) as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(self.sweep_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_limits_are_refused() {
        assert!(DomainRegistryConfig::default().validate().is_ok());
        for cfg in [
            DomainRegistryConfig {
                max_entries: 0,
                ..Default::default()
            },
            DomainRegistryConfig {
                default_expires_secs: 10,
                max_expires_secs: 5,
                ..Default::default()
            },
            DomainRegistryConfig {
                sweep_interval_secs: 0,
                ..Default::default()
            },
        ] {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn deserialises_partial_tables() {
        let cfg: DomainRegistryConfig =
            serde_json::from_str(r#"{"max_entries": 10}"#).expect("valid");
        assert_eq!(cfg.max_entries, 10);
        assert_eq!(cfg.default_expires_secs, 3_600);
        assert!(serde_json::from_str::<DomainRegistryConfig>(r#"{"nope": 1}"#).is_err());
    }
}
