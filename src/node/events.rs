//! Node-side handling of webinos events in transit.
//!
//! A runtime sends one `type:"event"` message per route, its `to` listing every
//! remote recipient entity the route serves (to ∪ cc ∪ bcc of the event) and
//! `body.value` holding the event in its JSON form. The node delivers it **once per
//! destination session (runtime)**, with `to` narrowed to that runtime's entities
//! and the event's `bcc` (and `forwarding.bcc`) narrowed to the entities of that
//! runtime: a delivered copy never reveals another runtime's blind-copy recipients.
//! Everything else in the event, and so its id, is unchanged.

use std::collections::HashMap;

use serde_json::Value;

use super::router::SessionKey;

/// One copy of an event message for one session.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    /// The destination session.
    pub session: SessionKey,
    /// The rewritten frame.
    pub frame: String,
}

/// Why an event message could not be split (the node then routes it unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// Not a JSON object with a `to`.
    #[error("not an event message: {0}")]
    Shape(&'static str),
}

fn narrow(list: &mut Value, keep: &[&str]) {
    if let Value::Array(items) = list {
        items.retain(|i| i.as_str().is_some_and(|s| keep.contains(&s)));
    }
}

/// Splits `frame` per owning session. Recipients nobody owns are returned in the
/// second list (they go to subscribers or get 404 as usual).
pub fn split(
    frame: &str,
    owner_of: impl Fn(&str) -> Option<SessionKey>,
) -> Result<(Vec<Copy>, Vec<String>), SplitError> {
    let msg: Value = serde_json::from_str(frame).map_err(|_| SplitError::Shape("not JSON"))?;
    let to: Vec<String> = match msg.get("to") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => return Err(SplitError::Shape("no to")),
    };
    let mut groups: Vec<(SessionKey, Vec<String>)> = Vec::new();
    let mut index: HashMap<SessionKey, usize> = HashMap::new();
    let mut unowned = Vec::new();
    for t in to {
        match owner_of(&t) {
            Some(k) => match index.get(&k) {
                Some(&i) => groups[i].1.push(t),
                None => {
                    index.insert(k.clone(), groups.len());
                    groups.push((k, vec![t]));
                }
            },
            None => unowned.push(t),
        }
    }
    let copies = groups
        .into_iter()
        .map(|(session, entities)| {
            let keep: Vec<&str> = entities.iter().map(String::as_str).collect();
            let mut m = msg.clone();
            if let Some(event) = m.pointer_mut("/body/value") {
                if let Some(bcc) = event.get_mut("bcc") {
                    narrow(bcc, &keep);
                }
                if let Some(bcc) = event.pointer_mut("/forwarding/bcc") {
                    narrow(bcc, &keep);
                }
            }
            m["to"] = match entities.len() {
                1 => Value::String(entities[0].clone()),
                _ => Value::from(entities),
            };
            Copy {
                session,
                frame: m.to_string(),
            }
        })
        .collect();
    Ok((copies, unowned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn owner(t: &str) -> Option<SessionKey> {
        if t.contains("/b") {
            Some(Arc::from("B"))
        } else if t.contains("/c") {
            Some(Arc::from("C"))
        } else {
            None
        }
    }

    #[test]
    fn one_copy_per_session_with_bcc_narrowed() {
        let event = json!({"type": "chat", "source": "hyperty://a.org/a1",
            "to": ["hyperty://x.org/b1"], "cc": ["hyperty://x.org/c1"],
            "bcc": ["hyperty://x.org/b2", "hyperty://x.org/c2", "hyperty://x.org/c3"],
            "forwarding": {"source": "hyperty://a.org/f", "to": ["hyperty://x.org/b1"], "cc": [], "bcc": ["hyperty://x.org/c2", "hyperty://x.org/b2"]},
            "payload": "hi"});
        let frame = json!({"id": 4, "type": "event", "from": "hyperty-runtime://a.org/rt/events",
            "to": ["hyperty://x.org/b1", "hyperty://x.org/c1", "hyperty://x.org/b2", "hyperty://x.org/c2", "hyperty://x.org/c3", "hyperty://x.org/z9"],
            "body": {"value": event}})
        .to_string();
        let (copies, unowned) = split(&frame, owner).unwrap();
        assert_eq!(unowned, ["hyperty://x.org/z9"]);
        assert_eq!(copies.len(), 2);
        let b: Value = serde_json::from_str(&copies[0].frame).unwrap();
        assert_eq!(&*copies[0].session, "B");
        assert_eq!(b["to"], json!(["hyperty://x.org/b1", "hyperty://x.org/b2"]));
        assert_eq!(b["body"]["value"]["bcc"], json!(["hyperty://x.org/b2"]));
        assert_eq!(
            b["body"]["value"]["forwarding"]["bcc"],
            json!(["hyperty://x.org/b2"])
        );
        assert_eq!(
            b["body"]["value"]["cc"],
            json!(["hyperty://x.org/c1"]),
            "cc is visible to all"
        );
        let c: Value = serde_json::from_str(&copies[1].frame).unwrap();
        assert_eq!(
            c["body"]["value"]["bcc"],
            json!(["hyperty://x.org/c2", "hyperty://x.org/c3"])
        );
        assert_eq!(c["id"], 4);
        assert_eq!(c["body"]["value"]["payload"], "hi");
    }

    #[test]
    fn odd_shapes_are_errors_not_panics() {
        assert!(split("nope", owner).is_err());
        assert!(split("{}", owner).is_err());
        let (copies, _) = split(
            r#"{"to":"hyperty://x.org/b1","body":{"value":"not an object"}}"#,
            owner,
        )
        .unwrap();
        assert_eq!(copies.len(), 1);
    }
}
