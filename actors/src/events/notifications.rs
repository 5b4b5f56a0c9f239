//! User-visible notifications (seed 004, "Ideas for phase 2").
//!
//! * A **notification request** is an event of type [`NOTIFICATION_REQUEST`] whose
//!   `to` holds only users (`user://…` addresses) and whose payload is the JSON of a
//!   [`Notification`]: `summary` (required, one line) and optionally `replacesId`,
//!   `urgency` (0 low, 1 normal, 2 critical), `category` (URI), `icon` (URI),
//!   `body` (HTML), `actions` (keyword → description; when present it must contain
//!   `default`, and keywords are unique) and `expirationTimeout` (ms after display).
//! * A **notification response** is an event of type [`NOTIFICATION_RESPONSE`] from
//!   a user, `inResponseTo` the request, payload the chosen action keyword, with the
//!   requester as primary recipient and the user as secondary recipient, so that
//!   every runtime of the user learns that the notification was answered.
//!
//! A [`NotificationCenter`] runs on each runtime of a user: it registers the user's
//! address as a *replicated* entity (so events to the user reach every runtime of
//! the user through the messaging node, which fans them out per runtime), shows
//! requests (replacing the one named by `replacesId`), lets the user respond, and
//! closes a notification on every runtime when a response is seen.
//!
//! ```
//! use hyperty_actors::events::notifications::{Notification, Urgency};
//!
//! let n = Notification::new("You have mail")
//!     .urgency(Urgency::Normal)
//!     .action("default", "Open")
//!     .action("later", "Remind me later");
//! let back = Notification::from_payload(&n.to_payload()).unwrap();
//! assert_eq!(back, n);
//! assert!(Notification::from_payload(r#"{"summary":"x","actions":{"open":"Open"}}"#).is_err());
//! assert!(Notification::from_payload(r#"{"summary":"x","actions":{"default":"a","default":"b"}}"#).is_err());
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use actix::prelude::*;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize};

use tracing::debug;

use crate::address::{Address, AddressKind};
use crate::events::entities::EntityOptions;
use crate::events::error::EventError;
use crate::events::handle::{EventEndpoint, EventsHandle};
use crate::events::id::EventId;
use crate::events::listeners::{IncomingEvent, ListenerFilter};
use crate::events::model::Event;

/// Type of notification requests.
pub const NOTIFICATION_REQUEST: &str = "userNotificationRequest";
/// Type of notification responses.
pub const NOTIFICATION_RESPONSE: &str = "userNotificationResponse";
/// The action every notification with actions has.
pub const DEFAULT_ACTION: &str = "default";
/// Most notifications a centre remembers.
pub const MAX_SHOWN_NOTIFICATIONS: usize = 1024;
/// Most actions per notification.
pub const MAX_ACTIONS: usize = 16;

/// Urgency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Urgency {
    /// 0
    Low = 0,
    /// 1
    Normal = 1,
    /// 2
    Critical = 2,
}

impl Urgency {
    fn from_u64(n: u64) -> Option<Urgency> {
        Some(match n {
            0 => Urgency::Low,
            1 => Urgency::Normal,
            2 => Urgency::Critical,
            _ => return None,
        })
    }
}

/// Why a notification is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// Not the JSON of a notification.
    #[error("malformed notification: {0}")]
    Malformed(String),
    /// `summary` missing, empty or not one line.
    #[error("'summary' must be one non-empty line")]
    Summary,
    /// Actions without `default`.
    #[error("actions must include \"default\"")]
    NoDefaultAction,
    /// Too many actions.
    #[error("more than {MAX_ACTIONS} actions")]
    TooManyActions,
    /// A recipient or responder is not a user.
    #[error("{0} is not a user address")]
    NotAUser(String),
    /// A response names an action the notification does not offer.
    #[error("no action {0:?}")]
    UnknownAction(String),
}

impl From<NotificationError> for EventError {
    fn from(e: NotificationError) -> Self {
        EventError::InvalidArgument(e.to_string())
    }
}

/// A notification object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// One-line overview.
    pub summary: String,
    /// The request this one replaces (and cancels).
    pub replaces_id: Option<EventId>,
    /// Urgency.
    pub urgency: Option<Urgency>,
    /// Category URI.
    pub category: Option<String>,
    /// Icon URI (or `data:` URI).
    pub icon: Option<String>,
    /// Longer text (HTML).
    pub body: Option<String>,
    /// Keyword → description, in order; unique keywords.
    pub actions: Vec<(String, String)>,
    /// Close automatically this many ms after display.
    pub expiration_timeout: Option<u64>,
}

struct Actions(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Actions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of keyword → description")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Actions, A::Error> {
                let mut v: Vec<(String, String)> = Vec::new();
                while let Some((k, d)) = map.next_entry::<String, String>()? {
                    if v.iter().any(|(x, _)| *x == k) {
                        return Err(serde::de::Error::custom(format!("duplicate action {k:?}")));
                    }
                    if v.len() >= MAX_ACTIONS {
                        return Err(serde::de::Error::custom("too many actions"));
                    }
                    v.push((k, d));
                }
                Ok(Actions(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationJson {
    summary: String,
    replaces_id: Option<String>,
    urgency: Option<u64>,
    category: Option<String>,
    icon: Option<String>,
    body: Option<String>,
    actions: Option<Actions>,
    expiration_timeout: Option<u64>,
}

impl Notification {
    /// A notification with a summary and nothing else.
    pub fn new(summary: impl Into<String>) -> Notification {
        Notification {
            summary: summary.into(),
            replaces_id: None,
            urgency: None,
            category: None,
            icon: None,
            body: None,
            actions: Vec::new(),
            expiration_timeout: None,
        }
    }

    /// Sets the urgency.
    pub fn urgency(mut self, u: Urgency) -> Self {
        self.urgency = Some(u);
        self
    }

    /// Adds (or replaces) an action.
    pub fn action(mut self, keyword: impl Into<String>, description: impl Into<String>) -> Self {
        let k = keyword.into();
        self.actions.retain(|(x, _)| *x != k);
        self.actions.push((k, description.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, html: impl Into<String>) -> Self {
        self.body = Some(html.into());
        self
    }

    /// Sets the category URI.
    pub fn category(mut self, uri: impl Into<String>) -> Self {
        self.category = Some(uri.into());
        self
    }

    /// Sets the icon URI.
    pub fn icon(mut self, uri: impl Into<String>) -> Self {
        self.icon = Some(uri.into());
        self
    }

    /// Replaces (cancels) an earlier notification request.
    pub fn replaces(mut self, request: EventId) -> Self {
        self.replaces_id = Some(request);
        self
    }

    /// Closes automatically after `ms` of display.
    pub fn expires_after(mut self, ms: u64) -> Self {
        self.expiration_timeout = Some(ms);
        self
    }

    /// True if it should be logged/remembered (normal or critical; normal by default).
    pub fn should_log(&self) -> bool {
        self.urgency.unwrap_or(Urgency::Normal) >= Urgency::Normal
    }

    /// True if `keyword` is a valid answer (`default` always is).
    pub fn offers(&self, keyword: &str) -> bool {
        keyword == DEFAULT_ACTION || self.actions.iter().any(|(k, _)| k == keyword)
    }

    /// Checks the rules.
    pub fn validate(&self) -> Result<(), NotificationError> {
        if self.summary.trim().is_empty() || self.summary.contains(['\n', '\r']) {
            return Err(NotificationError::Summary);
        }
        if !self.actions.is_empty() && !self.actions.iter().any(|(k, _)| k == DEFAULT_ACTION) {
            return Err(NotificationError::NoDefaultAction);
        }
        if self.actions.len() > MAX_ACTIONS {
            return Err(NotificationError::TooManyActions);
        }
        Ok(())
    }

    /// The JSON payload (`actions` keep their order).
    pub fn to_payload(&self) -> String {
        /// `actions` as a JSON object whose keys keep the notification's order.
        struct OrderedActions<'a>(&'a [(String, String)]);
        impl Serialize for OrderedActions<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, d) in self.0 {
                    m.serialize_entry(k, d)?;
                }
                m.end()
            }
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Payload<'a> {
            summary: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            replaces_id: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            urgency: Option<u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            category: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            icon: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            body: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            actions: Option<OrderedActions<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expiration_timeout: Option<u64>,
        }
        let payload = Payload {
            summary: &self.summary,
            replaces_id: self.replaces_id.map(|r| r.to_string()),
            urgency: self.urgency.map(|u| u as u8),
            category: self.category.as_deref(),
            icon: self.icon.as_deref(),
            body: self.body.as_deref(),
            actions: (!self.actions.is_empty()).then_some(OrderedActions(&self.actions)),
            expiration_timeout: self.expiration_timeout,
        };
        serde_json::to_string(&payload).unwrap_or_default()
    }

    /// Reads and validates a payload.
    pub fn from_payload(text: &str) -> Result<Notification, NotificationError> {
        let j: NotificationJson =
            serde_json::from_str(text).map_err(|e| NotificationError::Malformed(e.to_string()))?;
        let replaces_id = match j.replaces_id {
            None => None,
            Some(s) => Some(EventId::from_hex(&s).ok_or_else(|| {
                NotificationError::Malformed("replacesId is not an event id".into())
            })?),
        };
        let urgency = match j.urgency {
            None => None,
            Some(u) => Some(
                Urgency::from_u64(u)
                    .ok_or_else(|| NotificationError::Malformed("urgency is 0, 1 or 2".into()))?,
            ),
        };
        let n = Notification {
            summary: j.summary,
            replaces_id,
            urgency,
            category: j.category,
            icon: j.icon,
            body: j.body,
            actions: j.actions.map(|a| a.0).unwrap_or_default(),
            expiration_timeout: j.expiration_timeout,
        };
        n.validate()?;
        Ok(n)
    }

    /// The request event from `from` to `users` (all `user://` addresses).
    pub fn request(
        &self,
        from: Address,
        users: &[Address],
        now_ms: u64,
    ) -> Result<Event, EventError> {
        self.validate()?;
        if users.is_empty() {
            return Err(EventError::InvalidArgument("no user to notify".into()));
        }
        if let Some(u) = users.iter().find(|u| u.kind() != AddressKind::User) {
            return Err(NotificationError::NotAUser(u.to_string()).into());
        }
        Event::builder(NOTIFICATION_REQUEST, from)
            .to_all(users.iter().cloned())
            .payload(self.to_payload())
            .generated_at(now_ms)
            .build()
    }
}

/// The response of `user` choosing `action` for `request`: to the requester, cc
/// the user.
pub fn response(
    user: &Address,
    request: &Event,
    action: &str,
    now_ms: u64,
) -> Result<Event, EventError> {
    if user.kind() != AddressKind::User {
        return Err(NotificationError::NotAUser(user.to_string()).into());
    }
    if action.is_empty() {
        return Err(NotificationError::UnknownAction(action.into()).into());
    }
    Event::builder(NOTIFICATION_RESPONSE, user.clone())
        .to(request.sender().clone())
        .cc(user.clone())
        .in_response_to(request)
        .payload(action)
        .generated_at(now_ms)
        .build()
}

/// Where a shown notification stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationState {
    /// Displayed, waiting for the user.
    Open,
    /// Answered with this action (here or on another runtime of the user).
    Answered(String),
    /// Replaced by the request with this id.
    Replaced(EventId),
    /// Closed by its expiration timeout.
    Expired,
}

/// A notification as a centre shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownNotification {
    /// The request event.
    pub request: Arc<Event>,
    /// Its notification.
    pub notification: Notification,
    /// When it was displayed (ms).
    pub shown_at: u64,
    /// Its state.
    pub state: NotificationState,
}

/// The notifications of one user on one runtime. Start it with
/// [`NotificationCenter::start`].
pub struct NotificationCenter {
    user: Address,
    endpoint: EventEndpoint,
    shown: VecDeque<ShownNotification>,
}

impl fmt::Debug for NotificationCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationCenter")
            .field("user", &self.user)
            .field("shown", &self.shown.len())
            .finish_non_exhaustive()
    }
}

impl Actor for NotificationCenter {
    type Context = Context<Self>;
}

/// Lists the notifications (expired ones marked as such).
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "Vec<ShownNotification>")]
pub struct ListNotifications;

/// The user answers a notification; resolves to the response event sent.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Event, EventError>")]
pub struct Respond {
    /// The request answered.
    pub request: EventId,
    /// The action chosen.
    pub action: String,
}

impl NotificationCenter {
    /// Starts the centre of `user` (a `user://` address) on the current arbiter.
    pub async fn start(
        events: &EventsHandle,
        user: Address,
    ) -> Result<Addr<NotificationCenter>, EventError> {
        if user.kind() != AddressKind::User {
            return Err(NotificationError::NotAUser(user.to_string()).into());
        }
        let endpoint = events.endpoint(user.clone());
        endpoint
            .register_entity_with(user.clone(), EntityOptions::replicated())
            .await?;
        let addr = NotificationCenter {
            user: user.clone(),
            endpoint: endpoint.clone(),
            shown: VecDeque::new(),
        }
        .start();
        endpoint
            .add_listener(
                ListenerFilter::any().destination(user),
                addr.clone().recipient(),
            )
            .await?;
        Ok(addr)
    }

    fn refresh(&mut self) {
        let now = self.endpoint.handle().now_ms();
        for s in self.shown.iter_mut() {
            if s.state == NotificationState::Open
                && s.notification
                    .expiration_timeout
                    .is_some_and(|t| now > s.shown_at.saturating_add(t))
            {
                s.state = NotificationState::Expired;
            }
        }
    }

    fn show(&mut self, request: Arc<Event>) {
        let Some(n) = request
            .payload()
            .and_then(|p| Notification::from_payload(p).ok())
        else {
            debug!(id = %request.id(), "invalid notification request ignored");
            return;
        };
        if self.shown.iter().any(|s| s.request.id() == request.id()) {
            return;
        }
        if let Some(old) = n.replaces_id {
            for s in self.shown.iter_mut() {
                if s.request.id() == old && s.state == NotificationState::Open {
                    s.state = NotificationState::Replaced(request.id());
                }
            }
        }
        if self.shown.len() >= MAX_SHOWN_NOTIFICATIONS {
            self.shown.pop_front();
        }
        self.shown.push_back(ShownNotification {
            request,
            notification: n,
            shown_at: self.endpoint.handle().now_ms(),
            state: NotificationState::Open,
        });
    }

    fn answered(&mut self, response: &Event) {
        if response.source() != &self.user {
            return;
        }
        let (Some(about), Some(action)) = (response.in_response_to(), response.payload()) else {
            return;
        };
        if let Some(s) = self.shown.iter_mut().find(|s| s.request.id() == about) {
            if s.notification.offers(action) {
                s.state = NotificationState::Answered(action.to_owned());
            }
        }
    }
}

impl Handler<IncomingEvent> for NotificationCenter {
    type Result = ();
    fn handle(&mut self, m: IncomingEvent, _: &mut Context<Self>) {
        match m.event.event_type().as_str() {
            NOTIFICATION_REQUEST => self.show(m.event),
            NOTIFICATION_RESPONSE => self.answered(&m.event),
            _ => {}
        }
    }
}

impl Handler<ListNotifications> for NotificationCenter {
    type Result = MessageResult<ListNotifications>;
    fn handle(&mut self, _: ListNotifications, _: &mut Context<Self>) -> Self::Result {
        self.refresh();
        MessageResult(self.shown.iter().cloned().collect())
    }
}

impl Handler<Respond> for NotificationCenter {
    type Result = ResponseActFuture<Self, Result<Event, EventError>>;
    fn handle(&mut self, m: Respond, _: &mut Context<Self>) -> Self::Result {
        self.refresh();
        let Some(s) = self.shown.iter().find(|s| s.request.id() == m.request) else {
            return Box::pin(fut::ready(Err(EventError::InvalidArgument(format!(
                "no notification {}",
                m.request
            )))));
        };
        if s.state != NotificationState::Open {
            return Box::pin(fut::ready(Err(EventError::InvalidArgument(format!(
                "notification {} is {:?}",
                m.request, s.state
            )))));
        }
        if !s.notification.offers(&m.action) {
            return Box::pin(fut::ready(Err(
                NotificationError::UnknownAction(m.action).into()
            )));
        }
        let ev = match response(
            &self.user,
            &s.request,
            &m.action,
            self.endpoint.handle().now_ms(),
        ) {
            Ok(e) => e,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let endpoint = self.endpoint.clone();
        let sent = ev.clone();
        Box::pin(
            async move { endpoint.dispatch(ev, None, None).await }
                .into_actor(self)
                .map(move |r, act, _| {
                    r?;
                    act.answered(&sent);
                    Ok(sent)
                }),
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn actions_keep_their_order_on_the_wire() {
        let n = Notification::new("s")
            .action("open", "Open it")
            .action("default", "Dismiss")
            .action("archive", "Archive");
        let payload = n.to_payload();
        let open = payload.find("\"open\"").unwrap();
        let default = payload.find("\"default\"").unwrap();
        let archive = payload.find("\"archive\"").unwrap();
        assert!(open < default && default < archive, "{payload}");
        assert_eq!(
            Notification::from_payload(&payload).unwrap().actions,
            n.actions
        );
    }

    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn validation() {
        assert_eq!(
            Notification::new("").validate(),
            Err(NotificationError::Summary)
        );
        assert_eq!(
            Notification::new("a\nb").validate(),
            Err(NotificationError::Summary)
        );
        assert_eq!(
            Notification::new("x").action("open", "Open").validate(),
            Err(NotificationError::NoDefaultAction)
        );
        assert!(Notification::new("x").validate().is_ok());
        assert!(Notification::from_payload(r#"{"summary":"x","urgency":3}"#).is_err());
        assert!(Notification::from_payload(r#"{"summary":"x","replacesId":"nope"}"#).is_err());
        assert!(Notification::from_payload("[]").is_err());
        let full = Notification::new("Mail")
            .urgency(Urgency::Critical)
            .category("urn:mail")
            .icon("data:image/png;base64,AA==")
            .body("<b>3</b> new")
            .action("default", "Open")
            .replaces(EventId::from_bytes([7; 32]))
            .expires_after(5000);
        assert_eq!(
            Notification::from_payload(&full.to_payload()).unwrap(),
            full
        );
        assert!(full.should_log());
        assert!(!Notification::new("x").urgency(Urgency::Low).should_log());
    }

    #[test]
    fn requests_go_to_users_and_responses_come_from_them() {
        let n = Notification::new("Hi").action("default", "OK");
        let svc = a("hyperty://a.org/svc");
        assert!(n
            .request(svc.clone(), &[a("hyperty://a.org/x")], 0)
            .is_err());
        let req = n
            .request(svc.clone(), &[a("user://idp.org/alice")], 0)
            .unwrap();
        assert_eq!(req.event_type().as_str(), NOTIFICATION_REQUEST);
        let user = a("user://idp.org/alice");
        let resp = response(&user, &req, "default", 1).unwrap();
        assert_eq!(resp.addressing().to(), &[svc]);
        assert_eq!(resp.addressing().cc(), std::slice::from_ref(&user));
        assert_eq!(resp.in_response_to(), Some(req.id()));
        assert!(response(&a("hyperty://a.org/x"), &req, "default", 1).is_err());
    }
}
