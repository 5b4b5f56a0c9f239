//! The typed Syncher API a hyperty uses (seed 000's `Syncher`: `create` as
//! reporter, `subscribe` as observer, changes as a stream).
//!
//! [`HypertyContext::syncher`](crate::hyperty::HypertyContext::syncher) gives a
//! hyperty its [`Syncher`]. Every request it makes is a §9 message from the
//! hyperty's URL to `<runtime>/sm`, posted through the hyperty's bound bus (so the
//! PEP sees it); the [`SyncherManager`](super::SyncherManager) answers. A
//! [`Reporter`] edits its object (`set`, `delete`, `push`, `add_child`, …) and
//! decides who may observe it ([`Reporter::on_subscription`]); an
//! [`Observer`] reads the current snapshot and takes the stream of changes
//! ([`Observer::next`]), each with attribute, value, version and source. Data is
//! `serde_json::Value` on the edge and typed where the application names a type
//! ([`Observer::data_as`], [`Reporter::set`] takes any `Serialize`).
//!
//! ```
//! use hyperty_actors::syncher::{ObjectSpec, SyncEvent};
//! use serde_json::json;
//!
//! let spec = ObjectSpec::new("chat", "comm")
//!     .with_data(json!({"messages": []}))
//!     .with_schema(json!({"type": "object", "required": ["messages"]}));
//! assert_eq!(spec.name(), "chat");
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use actix::Addr;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::manager::{Attach, Detach, SetPolicy, SyncherManager};
use super::object::{Change, ObjectState, Op};
use super::path::AttrPath;
use super::SyncError;
use crate::address::{Address, Channel, HypertyUrl};
use crate::bus::BoundBus;
use crate::message::{Body, Message, MessageType, ResponseCode};

/// What a handle's change stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncEvent {
    /// A versioned change (data or child), in version order.
    Changed(Change),
    /// A child event (`event` on `<obj>/children/`): not state, not versioned.
    Event {
        /// Who sent it.
        source: Address,
        /// What it says.
        value: Value,
    },
    /// The stream fell behind (its channel was full) or the replica was replaced
    /// by a snapshot: read [`Observer::snapshot`], which is at `version`.
    Resync {
        /// The snapshot's version.
        version: u64,
    },
    /// An observer was accepted (reporter side).
    Subscribed {
        /// The observer hyperty.
        observer: Address,
    },
    /// An observer left (reporter side).
    Unsubscribed {
        /// The observer hyperty.
        observer: Address,
    },
    /// An invited hyperty answered the invitation (reporter side).
    InvitationAnswered {
        /// The invitee.
        invitee: Address,
        /// Its answer's code (1xx/2xx: notified).
        code: u16,
    },
    /// The object was deleted by its reporter.
    Deleted,
}

/// The state shared between the manager (its only writer) and the handles.
#[derive(Debug)]
pub struct ObjectView {
    state: RwLock<ObjectState>,
    lagged: AtomicBool,
}

impl ObjectView {
    pub(crate) fn new(state: ObjectState) -> Arc<ObjectView> {
        Arc::new(ObjectView {
            state: RwLock::new(state),
            lagged: AtomicBool::new(false),
        })
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> ObjectState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the state in place.
    pub fn with<R>(&self, f: impl FnOnce(&ObjectState) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut ObjectState) -> R) -> R {
        f(&mut self.state.write().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The manager's end of one handle's stream.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    pub(crate) hyperty: Address,
    view: Arc<ObjectView>,
    tx: mpsc::Sender<SyncEvent>,
}

impl Sink {
    pub(crate) fn new(
        hyperty: Address,
        view: Arc<ObjectView>,
        capacity: usize,
    ) -> (Sink, mpsc::Receiver<SyncEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Sink { hyperty, view, tx }, rx)
    }

    /// Queues `ev`; a full channel marks the reader as lagging instead (it then
    /// resynchronises from the snapshot). False if the reader is gone.
    pub(crate) fn push(&self, ev: SyncEvent) -> bool {
        match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.view.lagged.store(true, Ordering::SeqCst);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// What to create: name, scheme, initial data, schema, invitees.
#[derive(Debug, Clone, Default)]
pub struct ObjectSpec {
    name: String,
    scheme: String,
    data: Value,
    schema: Option<Value>,
    resources: Vec<String>,
    authorise: Vec<Address>,
}

impl ObjectSpec {
    /// An object called `name` of `scheme` (overridden by the schema's
    /// `properties.scheme`), with empty data.
    pub fn new(name: impl Into<String>, scheme: impl Into<String>) -> ObjectSpec {
        ObjectSpec {
            name: name.into(),
            scheme: scheme.into(),
            data: json!({}),
            ..ObjectSpec::default()
        }
    }

    /// The initial data.
    pub fn with_data(mut self, data: Value) -> ObjectSpec {
        self.data = data;
        self
    }

    /// The schema: a JSON Schema document, or the name of one the runtime knows.
    pub fn with_schema(mut self, schema: Value) -> ObjectSpec {
        self.schema = Some(schema);
        self
    }

    /// Resource types, for discovery (`chat`, `audio`, `temperature`, …).
    pub fn with_resources(mut self, resources: &[&str]) -> ObjectSpec {
        self.resources = resources.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Hyperties invited to observe it.
    pub fn invite(mut self, hyperties: impl IntoIterator<Item = Address>) -> ObjectSpec {
        self.authorise.extend(hyperties);
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A subscription the reporter is asked to accept.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRequest {
    /// The object.
    pub object: Address,
    /// The observer hyperty.
    pub observer: Address,
    /// Its runtime's SyncherManager.
    pub manager: Address,
    /// The identity the observer's runtime attached, if any.
    pub identity: Option<Value>,
    /// True if the observer was invited (`authorise`).
    pub invited: bool,
}

/// The reporter's answer to a [`SubscriptionRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionDecision {
    /// `{code:200, value:<snapshot>}`.
    Accept,
    /// `{code:403, description:<reason>}`.
    Reject(String),
}

/// Decides subscriptions of one object (runs on the manager's thread).
pub type SubscriptionPolicy =
    Arc<dyn Fn(&SubscriptionRequest) -> SubscriptionDecision + Send + Sync>;

/// An invitation a hyperty received: `create` from `<obj>/subscription` (§9
/// "Invite"). Answer it with a reply (1xx/2xx acknowledges), then
/// [`Syncher::subscribe`] to observe the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Invitation {
    /// The object.
    pub object: Address,
    /// Its reporter.
    pub reporter: Option<Address>,
    /// The object's metadata (name, scheme, schema, …).
    pub value: Value,
}

impl Invitation {
    /// The invitation `msg` carries, if it is one.
    pub fn from_message(msg: &Message) -> Option<Invitation> {
        if msg.kind != MessageType::Create {
            return None;
        }
        let (object, channel) = msg.from.channel()?;
        if channel != Channel::Subscription {
            return None;
        }
        Some(Invitation {
            object: object.parse().ok()?,
            reporter: msg.body.source.clone(),
            value: msg.body.value.clone().unwrap_or(Value::Null),
        })
    }
}

/// One data object registered in the domain registry (discovery results).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredObject {
    /// The object URL.
    pub url: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its reporter.
    #[serde(default)]
    pub reporter: String,
    /// Its schema.
    #[serde(default)]
    pub schema: String,
    /// Its resource types.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Its schemes.
    #[serde(default)]
    pub data_schemes: Vec<String>,
    /// `live` or `disconnected`.
    #[serde(default)]
    pub status: String,
}

/// A hyperty's access to the runtime's SyncherManager. Cheap to clone.
#[derive(Clone)]
pub struct Syncher {
    bus: BoundBus,
    me: HypertyUrl,
    sm: Address,
    manager: Option<Addr<SyncherManager>>,
}

impl fmt::Debug for Syncher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Syncher")
            .field("hyperty", &self.me)
            .finish()
    }
}

fn body(v: Value) -> Result<Body, SyncError> {
    match v {
        Value::Object(m) => {
            Body::from_map(m).map_err(|e| SyncError::BadRequest(format!("request body: {e}")))
        }
        _ => Err(SyncError::BadRequest("a body is an object".into())),
    }
}

/// `Ok(response)` for 2xx, else the error the response describes.
pub(crate) fn success(resp: Message) -> Result<Message, SyncError> {
    match resp.code() {
        Some(c) if c.is_success() => Ok(resp),
        Some(c) => Err(SyncError::from_response(c, resp.body.description_text())),
        None => Err(SyncError::Unavailable("an answer without code".into())),
    }
}

impl Syncher {
    pub(crate) fn new(
        bus: BoundBus,
        me: HypertyUrl,
        manager: Option<Addr<SyncherManager>>,
    ) -> Syncher {
        let sm = bus.runtime_url().component("sm");
        Syncher {
            bus,
            me,
            sm,
            manager,
        }
    }

    /// The hyperty this Syncher speaks for.
    pub fn hyperty(&self) -> &HypertyUrl {
        &self.me
    }

    /// Posts a §9 request to `<runtime>/sm` and waits for its final answer.
    async fn request(
        bus: BoundBus,
        me: Address,
        sm: Address,
        kind: MessageType,
        b: Value,
    ) -> Result<Message, SyncError> {
        let msg = Message::new(kind, me, sm).with_body(body(b)?);
        let resp = bus.post(msg).await.map_err(|e| {
            SyncError::from_response(
                crate::error::ToResponseCode::response_code(&e),
                Some(&e.to_string()),
            )
        })?;
        success(resp)
    }

    fn call(
        &self,
        kind: MessageType,
        b: Value,
    ) -> impl std::future::Future<Output = Result<Message, SyncError>> + 'static {
        Self::request(
            self.bus.clone(),
            self.me.address().clone(),
            self.sm.clone(),
            kind,
            b,
        )
    }

    fn manager(&self) -> Result<&Addr<SyncherManager>, SyncError> {
        self.manager
            .as_ref()
            .ok_or_else(|| SyncError::Unavailable("the SyncherManager".into()))
    }

    async fn attach(&self, url: Address) -> Result<Handle, SyncError> {
        let (id, view, rx) = self
            .manager()?
            .send(Attach {
                url: url.clone(),
                hyperty: self.me.address().clone(),
            })
            .await
            .map_err(|_| SyncError::Unavailable("the SyncherManager".into()))??;
        Ok(Handle {
            url,
            id,
            syncher: self.clone(),
            view,
            rx,
        })
    }

    /// Creates a data object and reports it (§9 "Create", then "Invite" for
    /// the spec's invitees): its URL is allocated by the node (scheme from the
    /// schema), it is registered in the domain registry, and its data is checked
    /// against the schema (400, nothing created, if it fails).
    pub async fn create(&self, spec: ObjectSpec) -> Result<Reporter, SyncError> {
        let mut b = json!({
            "resume": false,
            "scheme": spec.scheme,
            "value": {
                "name": spec.name,
                "reporter": self.me.as_str(),
                "resources": spec.resources,
                "data": spec.data,
            },
        });
        if let Some(s) = spec.schema {
            b["schema"] = s;
        }
        if !spec.authorise.is_empty() {
            b["authorise"] = json!(spec.authorise);
        }
        let resp = self.call(MessageType::Create, b).await?;
        let url = resource_of(&resp)?;
        Ok(Reporter(self.attach(url).await?))
    }

    /// Observes the object at `url` (§9 "Subscribe"): resolves once its reporter
    /// accepted, with the snapshot it sent; 403 if it rejected.
    pub async fn subscribe(&self, url: &Address) -> Result<Observer, SyncError> {
        self.call(MessageType::Subscribe, json!({"resource": url.as_str()}))
            .await?;
        Ok(Observer(self.attach(url.clone()).await?))
    }

    async fn resume(&self, kind: MessageType) -> Result<Vec<Handle>, SyncError> {
        let resp = match self.call(kind, json!({"resume": true})).await {
            Err(SyncError::NotFound(_)) => return Ok(Vec::new()),
            r => r?,
        };
        let urls: Vec<Address> = resp
            .body
            .value
            .as_ref()
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.get("url")?.as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(urls.len());
        for u in urls {
            out.push(self.attach(u).await?);
        }
        Ok(out)
    }

    /// The objects this hyperty reported before a restart (§9 "Resume", `create`
    /// with `resume:true`): same URLs, versions and observers.
    pub async fn resume_reporters(&self) -> Result<Vec<Reporter>, SyncError> {
        Ok(self
            .resume(MessageType::Create)
            .await?
            .into_iter()
            .map(Reporter)
            .collect())
    }

    /// The objects this hyperty observed before a restart (`subscribe` with
    /// `resume:true`); each catches up with its reporter.
    pub async fn resume_observers(&self) -> Result<Vec<Observer>, SyncError> {
        Ok(self
            .resume(MessageType::Subscribe)
            .await?
            .into_iter()
            .map(Observer)
            .collect())
    }

    /// Reads an object (§9 "Read"): the local copy if this runtime holds it,
    /// else its reporter's answer (which only accepted observers get).
    pub async fn read(&self, url: &Address) -> Result<ObjectState, SyncError> {
        let resp = self
            .call(MessageType::Read, json!({"resource": url.as_str()}))
            .await?;
        ObjectState::from_value(resp.body.value.as_ref().unwrap_or(&Value::Null))
    }

    /// Finds data objects in the domain registry by scheme and resource type (and
    /// reporter, if given).
    pub async fn discover(
        &self,
        data_schemes: &[&str],
        resources: &[&str],
        reporter: Option<&Address>,
    ) -> Result<Vec<DiscoveredObject>, SyncError> {
        let domain = self.bus.runtime_url().domain().unwrap_or("localhost");
        let registry: Address = format!("domain://registry.{domain}")
            .parse()
            .map_err(|e| SyncError::BadRequest(format!("registry address: {e}")))?;
        let mut criteria = json!({"dataSchemes": data_schemes, "resources": resources});
        if let Some(r) = reporter {
            criteria["reporter"] = json!(r.as_str());
        }
        let msg = Message::new(MessageType::Read, self.me.address().clone(), registry)
            .with_body(body(json!({"criteria": criteria}))?);
        let resp = self
            .bus
            .post(msg)
            .await
            .map_err(|e| SyncError::Unavailable(e.to_string()))?;
        if resp.code() == Some(ResponseCode::NotFound) {
            return Ok(Vec::new());
        }
        let resp = success(resp)?;
        let found = resp
            .body
            .value
            .as_ref()
            .and_then(Value::as_object)
            .map(|m| {
                m.values()
                    .filter_map(|v| DiscoveredObject::deserialize(v).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(found)
    }

    /// `execute {method:"sync"}`: the runtime fetches what it missed of `url` now
    /// (and resumes its idle checks); resolves when it is up to date.
    pub async fn sync(&self, url: &Address) -> Result<(), SyncError> {
        self.call(
            MessageType::Execute,
            json!({"method": "sync", "params": {"resource": url.as_str()}}),
        )
        .await
        .map(drop)
    }

    /// `execute {method:"stopSync"}`: the runtime stops its idle checks of `url`
    /// (live changes and gap recovery go on).
    pub async fn stop_sync(&self, url: &Address) -> Result<(), SyncError> {
        self.call(
            MessageType::Execute,
            json!({"method": "stopSync", "params": {"resource": url.as_str()}}),
        )
        .await
        .map(drop)
    }
}

fn resource_of(resp: &Message) -> Result<Address, SyncError> {
    resp.body
        .resource
        .as_ref()
        .and_then(|r| r.iter().next())
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| SyncError::Unavailable("an answer without resource".into()))
}

/// What both handles share.
struct Handle {
    url: Address,
    id: u64,
    syncher: Syncher,
    view: Arc<ObjectView>,
    rx: mpsc::Receiver<SyncEvent>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("url", &self.url)
            .field("hyperty", &self.syncher.me)
            .finish()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(m) = &self.syncher.manager {
            m.do_send(Detach {
                url: self.url.clone(),
                id: self.id,
            });
        }
    }
}

impl Handle {
    fn snapshot(&self) -> ObjectState {
        self.view.snapshot()
    }

    async fn next(&mut self) -> Option<SyncEvent> {
        if let Ok(ev) = self.rx.try_recv() {
            return Some(ev);
        }
        if self.view.lagged.swap(false, Ordering::SeqCst) {
            return Some(SyncEvent::Resync {
                version: self.view.with(|s| s.version),
            });
        }
        self.rx.recv().await
    }

    fn try_next(&mut self) -> Option<SyncEvent> {
        if let Ok(ev) = self.rx.try_recv() {
            return Some(ev);
        }
        self.view
            .lagged
            .swap(false, Ordering::SeqCst)
            .then(|| SyncEvent::Resync {
                version: self.view.with(|s| s.version),
            })
    }

    async fn edit(&self, b: Value, kind: MessageType) -> Result<Message, SyncError> {
        let mut b = b;
        if b.get("resource").is_none() {
            b["resource"] = json!(self.url.as_str());
        }
        self.syncher.call(kind, b).await
    }

    fn version_of(resp: &Message) -> u64 {
        resp.body
            .value
            .as_ref()
            .and_then(|v| v.get("version"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    async fn add_child(&self, data: Value) -> Result<String, SyncError> {
        let children = format!("{}/children/", self.url);
        let resp = self
            .edit(
                json!({"resource": children, "value": data}),
                MessageType::Create,
            )
            .await?;
        resp.body
            .resource
            .as_ref()
            .and_then(|r| r.iter().next().cloned())
            .ok_or_else(|| SyncError::Unavailable("an answer without the child id".into()))
    }

    async fn update_child(
        &self,
        child: &str,
        attribute: &str,
        value: Value,
    ) -> Result<u64, SyncError> {
        let resource = format!("{}/children/{child}", self.url);
        let resp = self
            .edit(
                json!({"resource": resource, "attribute": attribute, "value": value}),
                MessageType::Update,
            )
            .await?;
        Ok(Self::version_of(&resp))
    }

    async fn event(&self, value: Value) -> Result<(), SyncError> {
        let children = format!("{}/children/", self.url);
        self.edit(
            json!({"resource": children, "value": value}),
            MessageType::Event,
        )
        .await
        .map(drop)
    }
}

macro_rules! shared_handle_api {
    ($t:ident) => {
        impl $t {
            /// The object URL.
            pub fn url(&self) -> &Address {
                &self.0.url
            }

            /// A copy of the current state (data, version, children).
            pub fn snapshot(&self) -> ObjectState {
                self.0.snapshot()
            }

            /// The current data.
            pub fn data(&self) -> Value {
                self.0.view.with(|s| s.data.clone())
            }

            /// The current data as `T`.
            pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, SyncError> {
                self.0.view.with(|s| T::deserialize(&s.data)).map_err(|e| {
                    SyncError::BadRequest(format!("data is not of the type asked for: {e}"))
                })
            }

            /// The current version.
            pub fn version(&self) -> u64 {
                self.0.view.with(|s| s.version)
            }

            /// The next event, waiting for it; `None` once the object is gone
            /// from this runtime.
            pub async fn next(&mut self) -> Option<SyncEvent> {
                self.0.next().await
            }

            /// The next event if one is queued.
            pub fn try_next(&mut self) -> Option<SyncEvent> {
                self.0.try_next()
            }

            /// Adds a child (`<obj>/children/`); resolves with its id once the
            /// reporter gave it a version.
            pub async fn add_child(&self, data: impl Serialize) -> Result<String, SyncError> {
                self.0.add_child(to_value(data)?).await
            }

            /// Updates an attribute of a child this hyperty created (the reporter
            /// may update every child); resolves with the new version.
            pub async fn update_child(
                &self,
                child: &str,
                attribute: &str,
                value: impl Serialize,
            ) -> Result<u64, SyncError> {
                self.0
                    .update_child(child, attribute, to_value(value)?)
                    .await
            }

            /// Sends a child event (`event` on `<obj>/children/`) to every
            /// participant.
            pub async fn event(&self, value: impl Serialize) -> Result<(), SyncError> {
                self.0.event(to_value(value)?).await
            }
        }
    };
}

fn to_value(v: impl Serialize) -> Result<Value, SyncError> {
    serde_json::to_value(v).map_err(|e| SyncError::BadRequest(format!("value: {e}")))
}

/// The reporter's handle of one object.
#[derive(Debug)]
pub struct Reporter(Handle);

/// An observer's handle of one object.
#[derive(Debug)]
pub struct Observer(Handle);

shared_handle_api!(Reporter);
shared_handle_api!(Observer);

impl Reporter {
    async fn op(&self, b: Value) -> Result<u64, SyncError> {
        let resp = self.0.edit(b, MessageType::Update).await?;
        Ok(Handle::version_of(&resp))
    }

    /// Sets `attribute` (a dot path; `""` is the whole data); resolves with the
    /// version it produced.
    pub async fn set(&self, attribute: &str, value: impl Serialize) -> Result<u64, SyncError> {
        self.op(json!({"attribute": attribute, "value": to_value(value)?}))
            .await
    }

    /// Deletes `attribute`.
    pub async fn delete(&self, attribute: &str) -> Result<u64, SyncError> {
        self.op(json!({"attribute": attribute})).await
    }

    /// Appends `value` to the array at `attribute` (an array add at its end).
    pub async fn push(&self, attribute: &str, value: impl Serialize) -> Result<u64, SyncError> {
        let path = AttrPath::parse(attribute)?;
        let len = self
            .0
            .view
            .with(|s| path.get(&s.data).and_then(Value::as_array).map(Vec::len))
            .ok_or_else(|| SyncError::BadRequest(format!("{attribute:?} is not an array")))?;
        self.insert(&path.child(&len.to_string())?.to_string(), value)
            .await
    }

    /// Array add: splices `value` in at `<array>.<index>`.
    pub async fn insert(&self, at: &str, value: impl Serialize) -> Result<u64, SyncError> {
        self.op(json!({"attribute": at, "attributeType": "array", "operation": "add", "value": to_value(value)?}))
            .await
    }

    /// Array remove: removes `count` items starting at `<array>.<index>`.
    pub async fn remove(&self, at: &str, count: usize) -> Result<u64, SyncError> {
        self.op(json!({"attribute": at, "attributeType": "array", "operation": "remove", "value": count}))
            .await
    }

    /// Invites more hyperties (§9 "Invite").
    pub async fn invite(&self, hyperties: &[Address]) -> Result<(), SyncError> {
        self.0
            .edit(json!({"authorise": hyperties}), MessageType::Create)
            .await
            .map(drop)
    }

    /// Decides who may observe the object (the default accepts everyone).
    pub async fn on_subscription<F>(&self, policy: F) -> Result<(), SyncError>
    where
        F: Fn(&SubscriptionRequest) -> SubscriptionDecision + Send + Sync + 'static,
    {
        self.0
            .syncher
            .manager()?
            .send(SetPolicy {
                url: self.0.url.clone(),
                hyperty: self.0.syncher.me.address().clone(),
                policy: Arc::new(policy),
            })
            .await
            .map_err(|_| SyncError::Unavailable("the SyncherManager".into()))?
    }

    /// The accepted observers.
    pub async fn observers(&self) -> Result<Vec<Address>, SyncError> {
        let resp = self
            .0
            .edit(json!({"attribute": "observers"}), MessageType::Read)
            .await?;
        Ok(resp
            .body
            .value
            .as_ref()
            .and_then(|v| v.get("observers"))
            .and_then(|v| Vec::<Address>::deserialize(v).ok())
            .unwrap_or_default())
    }

    /// Deletes the object: observers are told, the registry entry and the
    /// address go.
    pub async fn delete_object(self) -> Result<(), SyncError> {
        self.0.edit(json!({}), MessageType::Delete).await.map(drop)
    }
}

impl Observer {
    /// Stops observing (§9 "Unsubscribe"): nothing more arrives.
    pub async fn unsubscribe(self) -> Result<(), SyncError> {
        self.0
            .edit(json!({}), MessageType::Unsubscribe)
            .await
            .map(drop)
    }

    /// The reporter.
    pub fn reporter(&self) -> Address {
        self.0.view.with(|s| s.reporter.clone())
    }
}

impl SyncEvent {
    /// The change, if this is one.
    pub fn change(&self) -> Option<&Change> {
        match self {
            SyncEvent::Changed(c) => Some(c),
            _ => None,
        }
    }

    /// The attribute a data change set, with its value (`None` for other events).
    pub fn attribute(&self) -> Option<(&str, Option<&Value>)> {
        match self.change().map(|c| (&c.child, &c.op)) {
            Some((None, Op::Set { attribute, value })) => Some((attribute.as_str(), Some(value))),
            Some((None, Op::Delete { attribute })) => Some((attribute.as_str(), None)),
            Some((None, Op::Insert { attribute, value })) => {
                Some((attribute.as_str(), Some(value)))
            }
            Some((None, Op::Remove { attribute, .. })) => Some((attribute.as_str(), None)),
            _ => None,
        }
    }
}
