//! What the registry stores: hyperty instances and data objects, and how they look
//! as JSON (the reTHINK `HypertyInstance` and data-object registry shapes).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

/// Whether an entry's runtime is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Reachable.
    Live,
    /// Registered, but its runtime is not connected; reads that find only such
    /// entries answer 408.
    Disconnected,
}

impl Status {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Disconnected => "disconnected",
        }
    }

    /// Parses the wire spelling.
    pub fn from_wire(s: &str) -> Option<Status> {
        match s {
            "live" => Some(Status::Live),
            "disconnected" => Some(Status::Disconnected),
            _ => None,
        }
    }
}

/// One registered hyperty instance. Serialises as the reTHINK `HypertyInstance`
/// (`descriptor`, `startingTime`, `lastModified`, `expires`, `resources`,
/// `dataSchemes`, `status`, `runtime`, `p2pRequester`, `p2pHandler`, `guid`,
/// `hypertyID`, `userID`); times are RFC 3339 UTC strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypertyRecord {
    /// `hypertyID`: the hyperty URL, the entry's key.
    pub url: String,
    /// `userID`: the user the hyperty acts for.
    pub user: String,
    /// Catalogue URL of the hyperty's descriptor.
    pub descriptor: String,
    /// Hyperty resource types (`chat`, `audio`, …).
    pub resources: Vec<String>,
    /// Data-object schemes the hyperty handles.
    pub data_schemes: Vec<String>,
    /// The runtime hosting the hyperty; [`RuntimeDisconnected`](super::RuntimeDisconnected)
    /// matches on it.
    pub runtime: Option<String>,
    /// P2P requester stub descriptor.
    pub p2p_requester: Option<String>,
    /// P2P handler stub URL.
    pub p2p_handler: Option<String>,
    /// The user's `user-guid://` identifier.
    pub guid: Option<String>,
    /// Reachability.
    pub status: Status,
    /// Lifetime in seconds after the last refresh.
    pub expires: u64,
    /// When the entry was created.
    pub starting_time: SystemTime,
    /// When the entry last changed or was refreshed.
    pub last_modified: SystemTime,
}

/// One registered data object. Serialises with the fields `name`, `schema`, `url`,
/// `reporter`, `startingTime`, `lastModified`, `expires`, `resources`,
/// `dataSchemes`, `status`, `runtime`, `p2pRequester`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataObjectRecord {
    /// The object URL, the entry's key.
    pub url: String,
    /// The object's name.
    pub name: String,
    /// Catalogue URL of the object's schema.
    pub schema: String,
    /// The reporter hyperty.
    pub reporter: String,
    /// Resource types.
    pub resources: Vec<String>,
    /// Data-object schemes.
    pub data_schemes: Vec<String>,
    /// The runtime hosting the reporter.
    pub runtime: Option<String>,
    /// P2P requester stub descriptor.
    pub p2p_requester: Option<String>,
    /// Reachability.
    pub status: Status,
    /// Lifetime in seconds after the last refresh.
    pub expires: u64,
    /// When the entry was created.
    pub starting_time: SystemTime,
    /// When the entry last changed or was refreshed.
    pub last_modified: SystemTime,
}

/// A registry entry of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A hyperty instance (URL scheme `hyperty`, `hyperty-runtime`, `user` or `user-guid`).
    Hyperty(HypertyRecord),
    /// A data object (any other URL scheme).
    DataObject(DataObjectRecord),
}

impl Record {
    /// The entry's URL.
    pub fn url(&self) -> &str {
        match self {
            Record::Hyperty(h) => &h.url,
            Record::DataObject(d) => &d.url,
        }
    }

    /// Reachability.
    pub fn status(&self) -> Status {
        match self {
            Record::Hyperty(h) => h.status,
            Record::DataObject(d) => d.status,
        }
    }

    /// The hosting runtime.
    pub fn runtime(&self) -> Option<&str> {
        match self {
            Record::Hyperty(h) => h.runtime.as_deref(),
            Record::DataObject(d) => d.runtime.as_deref(),
        }
    }

    /// The owner counted against `max_entries_per_user`: the user of a hyperty, the
    /// reporter of a data object.
    pub fn owner(&self) -> &str {
        match self {
            Record::Hyperty(h) => &h.user,
            Record::DataObject(d) => &d.reporter,
        }
    }

    /// Lifetime in seconds after the last refresh.
    pub fn expires(&self) -> u64 {
        match self {
            Record::Hyperty(h) => h.expires,
            Record::DataObject(d) => d.expires,
        }
    }

    pub(crate) fn set_status(&mut self, status: Status) {
        match self {
            Record::Hyperty(h) => h.status = status,
            Record::DataObject(d) => d.status = status,
        }
    }

    pub(crate) fn set_times(&mut self, starting: Option<SystemTime>, modified: SystemTime) {
        let (s, m) = match self {
            Record::Hyperty(h) => (&mut h.starting_time, &mut h.last_modified),
            Record::DataObject(d) => (&mut d.starting_time, &mut d.last_modified),
        };
        if let Some(start) = starting {
            *s = start;
        }
        *m = modified;
    }

    pub(crate) fn starting_time(&self) -> SystemTime {
        match self {
            Record::Hyperty(h) => h.starting_time,
            Record::DataObject(d) => d.starting_time,
        }
    }
}

/// Formats a time as an RFC 3339 UTC timestamp with milliseconds
/// (`2024-02-29T12:00:00.000Z`); times before 1970 print as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (hh, mm, ss) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HypertyJson<'a> {
    descriptor: &'a str,
    starting_time: String,
    last_modified: String,
    expires: u64,
    resources: &'a [String],
    data_schemes: &'a [String],
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p2p_requester: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p2p_handler: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guid: Option<&'a str>,
    #[serde(rename = "hypertyID")]
    hyperty_id: &'a str,
    #[serde(rename = "userID")]
    user_id: &'a str,
}

impl Serialize for HypertyRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HypertyJson {
            descriptor: &self.descriptor,
            starting_time: rfc3339(self.starting_time),
            last_modified: rfc3339(self.last_modified),
            expires: self.expires,
            resources: &self.resources,
            data_schemes: &self.data_schemes,
            status: self.status,
            runtime: self.runtime.as_deref(),
            p2p_requester: self.p2p_requester.as_deref(),
            p2p_handler: self.p2p_handler.as_deref(),
            guid: self.guid.as_deref(),
            hyperty_id: &self.url,
            user_id: &self.user,
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataObjectJson<'a> {
    name: &'a str,
    schema: &'a str,
    url: &'a str,
    reporter: &'a str,
    starting_time: String,
    last_modified: String,
    expires: u64,
    resources: &'a [String],
    data_schemes: &'a [String],
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p2p_requester: Option<&'a str>,
}

impl Serialize for DataObjectRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DataObjectJson {
            name: &self.name,
            schema: &self.schema,
            url: &self.url,
            reporter: &self.reporter,
            starting_time: rfc3339(self.starting_time),
            last_modified: rfc3339(self.last_modified),
            expires: self.expires,
            resources: &self.resources,
            data_schemes: &self.data_schemes,
            status: self.status,
            runtime: self.runtime.as_deref(),
            p2p_requester: self.p2p_requester.as_deref(),
        }
        .serialize(s)
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Record::Hyperty(h) => h.serialize(s),
            Record::DataObject(d) => d.serialize(s),
        }
    }
}

/// The 408 rule: a read whose every match is disconnected answers
/// "Temporarily Unavailable" (with the matches as `value`).
pub trait Availability {
    /// True if there is at least one match and every match is disconnected.
    fn all_disconnected(&self) -> bool;
}

impl Availability for HypertyRecord {
    fn all_disconnected(&self) -> bool {
        self.status == Status::Disconnected
    }
}

impl Availability for DataObjectRecord {
    fn all_disconnected(&self) -> bool {
        self.status == Status::Disconnected
    }
}

impl Availability for Record {
    fn all_disconnected(&self) -> bool {
        self.status() == Status::Disconnected
    }
}

impl<T: Availability> Availability for BTreeMap<String, T> {
    fn all_disconnected(&self) -> bool {
        !self.is_empty() && self.values().all(Availability::all_disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_709_208_000), "2024-02-29T12:00:00.000Z");
        assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_500)),
            "1970-01-01T00:00:01.500Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn hyperty_instance_shape() {
        let h = HypertyRecord {
            url: "hyperty://d.org/1".into(),
            user: "user://idp.org/alice".into(),
            descriptor: "hyperty-catalogue://catalogue.d.org/.well-known/hyperty/Chat".into(),
            resources: vec!["chat".into()],
            data_schemes: vec!["comm".into()],
            runtime: Some("runtime://d.org/rt".into()),
            p2p_requester: None,
            p2p_handler: None,
            guid: None,
            status: Status::Live,
            expires: 3600,
            starting_time: UNIX_EPOCH,
            last_modified: UNIX_EPOCH,
        };
        let v = serde_json::to_value(&h).expect("serialises");
        assert_eq!(
            v,
            json!({
                "descriptor": "hyperty-catalogue://catalogue.d.org/.well-known/hyperty/Chat",
                "startingTime": "1970-01-01T00:00:00.000Z",
                "lastModified": "1970-01-01T00:00:00.000Z",
                "expires": 3600,
                "resources": ["chat"],
                "dataSchemes": ["comm"],
                "status": "live",
                "runtime": "runtime://d.org/rt",
                "hypertyID": "hyperty://d.org/1",
                "userID": "user://idp.org/alice",
            })
        );
    }

    #[test]
    fn availability_of_maps() {
        let mut m: BTreeMap<String, Record> = BTreeMap::new();
        assert!(!m.all_disconnected(), "nothing found is 404, not 408");
        let d = DataObjectRecord {
            url: "comm://d.org/1".into(),
            name: "n".into(),
            schema: "s".into(),
            reporter: "hyperty://d.org/r".into(),
            resources: vec![],
            data_schemes: vec![],
            runtime: None,
            p2p_requester: None,
            status: Status::Disconnected,
            expires: 1,
            starting_time: UNIX_EPOCH,
            last_modified: UNIX_EPOCH,
        };
        m.insert("a".into(), Record::DataObject(d.clone()));
        assert!(m.all_disconnected());
        let mut live = d;
        live.status = Status::Live;
        m.insert("b".into(), Record::DataObject(live));
        assert!(!m.all_disconnected());
    }
}
