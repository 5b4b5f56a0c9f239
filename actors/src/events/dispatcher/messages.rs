//! The dispatcher's messages and their handlers (the application API goes through
//! [`EventsHandle`]).

use super::*;

/// Registers an entity owned by `owner`.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct RegisterEntity {
    /// The entity.
    pub entity: Address,
    /// Its owner.
    pub owner: Address,
    /// Options.
    pub options: EntityOptions,
}

/// Unregisters an entity (and its RPC handler).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct UnregisterEntity {
    /// The entity.
    pub entity: Address,
    /// Its owner.
    pub owner: Address,
}

/// The application of `owner` processed the event `id` delivered to its durable
/// `entity`: it leaves the entity's inbox. Resolves to false if it was not there.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<bool, EventError>")]
pub struct AckEvent {
    /// The owner.
    pub owner: Address,
    /// The durable entity.
    pub entity: Address,
    /// The event.
    pub id: EventId,
}

/// Adds a listener for `owner`.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<EventListenerId, EventError>")]
pub struct AddEventListener {
    /// The owner.
    pub owner: Address,
    /// The filter.
    pub filter: ListenerFilter,
    /// Where matching events go.
    pub recipient: Recipient<IncomingEvent>,
}

/// Removes a listener.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct RemoveEventListener {
    /// The owner.
    pub owner: Address,
    /// The registration.
    pub id: EventListenerId,
}

/// Dispatches an event from an entity of `owner` (the spec's `dispatchWebinosEvent`).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct DispatchEvent {
    /// The owner of the source.
    pub owner: Address,
    /// The event.
    pub event: Event,
    /// Callbacks (Delivery notification wanted follows from them).
    pub callbacks: Option<EventCallbacks>,
    /// `onTimeout` after this long without a response from a primary recipient.
    pub reference_timeout: Option<Duration>,
}

/// Forwards an event on behalf of an entity of `owner` (`forwardWebinosEvent`).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Event, EventError>")]
pub struct ForwardEvent {
    /// The owner of the forwarder.
    pub owner: Address,
    /// The event.
    pub event: Event,
    /// The forwarder (source) and the new destinations.
    pub forwarding: Addressing,
    /// Stamp the forwarding with the current time.
    pub with_timestamp: bool,
    /// Callbacks.
    pub callbacks: Option<EventCallbacks>,
    /// Reference timeout.
    pub reference_timeout: Option<Duration>,
}

/// Exposes RPC methods on an entity of `owner`.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct ServeRpc {
    /// The owner.
    pub owner: Address,
    /// The entity answering requests.
    pub entity: Address,
    /// The handler.
    pub handler: Recipient<RpcCall>,
}

/// Sends RPC requests from an entity of `owner`; resolves to a receiver of the
/// answer, or `None` if every request is a notification.
#[derive(Debug, Clone, actix::Message)]
#[rtype(
    result = "Result<Option<oneshot::Receiver<Result<Vec<RpcResponse>, RpcCallError>>>, EventError>"
)]
pub struct CallRpc {
    /// The owner of `from`.
    pub owner: Address,
    /// The calling entity.
    pub from: Address,
    /// The called entity.
    pub to: Address,
    /// The requests.
    pub requests: Vec<RpcRequest>,
    /// Send as a batch (an array) even for one request.
    pub batch: bool,
}

/// Installs a policy.
#[derive(actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct AddEventPolicy(pub Arc<dyn EventPolicy>);

impl fmt::Debug for AddEventPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddEventPolicy({})", self.0.name())
    }
}

/// Removes a policy by name.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "bool")]
pub struct RemoveEventPolicy(pub String);

/// Runs the timer's work now: reference timeouts, RPC deadlines, cache expiry and
/// retransmission. Resolves once due retransmissions are handed to the bus.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Tick;

/// Reads the counters.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "EventStats")]
pub struct GetEventStats;

/// Number of events in the cache.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "usize")]
pub struct CachedCount;

/// Closes the cache and stops the dispatcher.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct StopEvents;

impl Handler<Deliver> for EventDispatcher {
    type Result = ();
    fn handle(&mut self, Deliver(msg): Deliver, ctx: &mut Context<Self>) {
        if msg.kind == MessageType::Event {
            self.incoming(msg, ctx);
        } else if msg.code() == Some(ResponseCode::NotFound) {
            // a node found nobody holding the recipients of one of our transmissions
            if let Some((ev, group)) = self.transmitted.take(msg.id) {
                debug!(id = %ev.id(), to = %msg.from, "transmission refused: no such recipient");
                self.cache.do_send(CacheAck {
                    id: ev.id(),
                    sender: ev.sender().clone(),
                    recipients: group.clone(),
                });
                let key = (ev.id(), ev.sender().clone());
                self.notify_bad(&ev, group, ctx);
                self.release_if_done(&key);
            }
        }
    }
}

impl Handler<RegisterEntity> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: RegisterEntity, _: &mut Context<Self>) -> Self::Result {
        debug!(entity = %m.entity, owner = %m.owner, "entity registered");
        self.entities
            .register(m.entity.clone(), m.owner, m.options)?;
        if m.options.durable {
            if let Some(r) = self.restored.remove(&m.entity) {
                self.restore_entity(&m.entity, r);
            }
        }
        Ok(())
    }
}

impl Handler<AckEvent> for EventDispatcher {
    type Result = Result<bool, EventError>;
    fn handle(&mut self, m: AckEvent, _: &mut Context<Self>) -> Self::Result {
        self.acknowledge(&m.owner, &m.entity, m.id)
    }
}

impl Handler<UnregisterEntity> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: UnregisterEntity, _: &mut Context<Self>) -> Self::Result {
        self.entities.unregister(&m.entity, &m.owner)?;
        self.rpc_servers.remove(&m.entity);
        Ok(())
    }
}

impl Handler<AddEventListener> for EventDispatcher {
    type Result = Result<EventListenerId, EventError>;
    fn handle(&mut self, m: AddEventListener, _: &mut Context<Self>) -> Self::Result {
        if let Some(t) = &m.filter.event_type {
            if !crate::events::model::is_valid_type(t) {
                return Err(EventError::InvalidArgument(format!(
                    "{t:?} is not a valid event type"
                )));
            }
        }
        if let Some(d) = &m.filter.destination {
            if !self.entities.owns(&m.owner, d.as_str()) {
                return Err(EventError::PermissionDenied(format!(
                    "{d} is not an entity of {}",
                    m.owner
                )));
            }
        }
        if self.listeners.len() >= self.config.max_listeners {
            return Err(EventError::Full("event listeners"));
        }
        let owner = m.owner.clone();
        let id = self.listeners.add(m.owner, m.filter, m.recipient);
        self.replay_inbox(&owner, id);
        Ok(id)
    }
}

impl Handler<RemoveEventListener> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: RemoveEventListener, _: &mut Context<Self>) -> Self::Result {
        if self.listeners.remove(&m.owner, m.id) {
            Ok(())
        } else {
            Err(EventError::InvalidArgument(format!("no listener {}", m.id)))
        }
    }
}

impl EventDispatcher {
    pub(super) fn check_sender(
        &self,
        owner: &Address,
        event: &Event,
        sender: &Address,
    ) -> Result<(), EventError> {
        if event.is_reserved() {
            return Err(EventError::InvalidArgument(format!(
                "type {} is reserved to the event dispatcher",
                event.event_type()
            )));
        }
        if !self.entities.owns(owner, sender.as_str()) {
            return Err(EventError::PermissionDenied(format!(
                "{sender} is not an entity of {owner}"
            )));
        }
        Ok(())
    }
}

impl Handler<DispatchEvent> for EventDispatcher {
    type Result = ActorResponse<Self, Result<(), EventError>>;
    fn handle(&mut self, m: DispatchEvent, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_sender(&m.owner, &m.event, m.event.source()) {
            return ActorResponse::reply(Err(e));
        }
        if m.event.forwarding().is_some() {
            return ActorResponse::reply(Err(EventError::InvalidArgument(
                "a forwarded event is sent again with forward".into(),
            )));
        }
        let wanted = m
            .callbacks
            .as_ref()
            .is_some_and(EventCallbacks::wants_notifications);
        let ev = Arc::new(m.event.with_dnw(wanted));
        self.outgoing(
            ev,
            true,
            m.callbacks.map(Reporter::App),
            m.reference_timeout,
            ctx,
        )
        .respond(self, Box::new(|r, _| r))
    }
}

impl Handler<ForwardEvent> for EventDispatcher {
    type Result = ActorResponse<Self, Result<Event, EventError>>;
    fn handle(&mut self, m: ForwardEvent, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_sender(&m.owner, &m.event, m.forwarding.source()) {
            return ActorResponse::reply(Err(e));
        }
        let ts = m.with_timestamp.then(|| self.now());
        let forwarding = match Forwarding::new(m.forwarding, ts) {
            Ok(f) => f,
            Err(e) => return ActorResponse::reply(Err(e)),
        };
        let wanted = m
            .callbacks
            .as_ref()
            .is_some_and(EventCallbacks::wants_notifications);
        let ev = Arc::new(m.event.forwarded(forwarding).with_dnw(wanted));
        let out = (*ev).clone();
        self.outgoing(
            ev,
            true,
            m.callbacks.map(Reporter::App),
            m.reference_timeout,
            ctx,
        )
        .respond(self, Box::new(move |r, _| r.map(|()| out)))
    }
}

impl Handler<ServeRpc> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: ServeRpc, _: &mut Context<Self>) -> Self::Result {
        if !self.entities.owns(&m.owner, m.entity.as_str()) {
            return Err(EventError::PermissionDenied(format!(
                "{} is not an entity of {}",
                m.entity, m.owner
            )));
        }
        self.rpc_servers.insert(m.entity, m.handler);
        Ok(())
    }
}

impl Handler<CallRpc> for EventDispatcher {
    type Result = ActorResponse<
        Self,
        Result<Option<oneshot::Receiver<Result<Vec<RpcResponse>, RpcCallError>>>, EventError>,
    >;
    fn handle(&mut self, m: CallRpc, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        if !self.entities.owns(&m.owner, m.from.as_str()) {
            return ActorResponse::reply(Err(EventError::PermissionDenied(format!(
                "{} is not an entity of {}",
                m.from, m.owner
            ))));
        }
        if m.requests.is_empty() {
            return ActorResponse::reply(Err(EventError::InvalidArgument("no RPC request".into())));
        }
        let answered = m.requests.iter().any(|r| !r.is_notification());
        if answered && self.rpc_calls.len() >= self.config.max_rpc_calls {
            return ActorResponse::reply(Err(EventError::Full("RPC calls")));
        }
        let payload = request_payload(m.batch || m.requests.len() > 1, &m.requests);
        let event = Event::builder(RPC_REQUEST, m.from.clone())
            .to(m.to.clone())
            .payload(payload)
            .generated_at(now)
            .addressing_sensitive(true)
            .delivery_notification_wanted(true)
            .build_any();
        let event = match event {
            Ok(e) => Arc::new(e),
            Err(e) => return ActorResponse::reply(Err(e.into())),
        };
        let rx = answered.then(|| {
            let (tx, rx) = oneshot::channel();
            self.rpc_calls.insert(
                event.id(),
                PendingCall {
                    from: m.from,
                    to: m.to,
                    deadline: after(now, self.config.rpc_timeout),
                    tx,
                },
            );
            rx
        });
        let id = event.id();
        self.outgoing(event, true, Some(Reporter::Rpc), None, ctx)
            .respond(
                self,
                Box::new(move |r, act| match r {
                    Ok(()) => Ok(rx),
                    Err(e) => {
                        act.rpc_calls.remove(&id);
                        Err(e)
                    }
                }),
            )
    }
}

impl Handler<AddEventPolicy> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: AddEventPolicy, _: &mut Context<Self>) -> Self::Result {
        if self.policies.iter().any(|p| p.name() == m.0.name()) {
            return Err(EventError::InvalidArgument(format!(
                "a policy named {} is installed",
                m.0.name()
            )));
        }
        if self.policies.len() >= MAX_EVENT_POLICIES {
            return Err(EventError::Full("event policies"));
        }
        self.policies.push(m.0);
        Ok(())
    }
}

impl Handler<RemoveEventPolicy> for EventDispatcher {
    type Result = bool;
    fn handle(&mut self, m: RemoveEventPolicy, _: &mut Context<Self>) -> bool {
        let before = self.policies.len();
        self.policies.retain(|p| p.name() != m.0);
        self.policies.len() < before
    }
}

impl Handler<Tick> for EventDispatcher {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Tick, _: &mut Context<Self>) -> Self::Result {
        self.tick()
    }
}

impl Handler<GetEventStats> for EventDispatcher {
    type Result = MessageResult<GetEventStats>;
    fn handle(&mut self, _: GetEventStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats)
    }
}

impl Handler<CachedCount> for EventDispatcher {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, _: CachedCount, _: &mut Context<Self>) -> Self::Result {
        let req = self.cache.send(CacheLen);
        Box::pin(async move { req.await.unwrap_or(0) })
    }
}

impl Handler<StopEvents> for EventDispatcher {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: StopEvents, _: &mut Context<Self>) -> Self::Result {
        let close = self.cache.send(CloseCache);
        for (_, c) in self.rpc_calls.drain() {
            let _ = c.tx.send(Err(RpcCallError::Event(EventError::Unavailable)));
        }
        Box::pin(close.into_actor(self).map(|_, _, ctx| ctx.stop()))
    }
}
