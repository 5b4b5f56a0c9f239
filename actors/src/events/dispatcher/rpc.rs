//! Serving RPC requests to local entities and completing local callers' calls.

use super::*;

impl EventDispatcher {
    pub(super) fn serve_rpc(&mut self, ev: Arc<Event>, callee: Address, ctx: &mut Context<Self>) {
        let Ok(batch) = parse_request_payload(ev.payload().unwrap_or_default()) else {
            return;
        };
        self.stats.rpc_served += 1;
        let handler = self.rpc_servers.get(&callee).cloned();
        let caller = ev.source().clone();
        let caller_is_local = self.entities.contains(caller.as_str());
        let calls: Vec<BoxFuture<'static, Option<RpcResponse>>> = batch
            .items
            .into_iter()
            .map(|item| match item {
                Err(invalid) => futures_util::future::ready(Some(invalid)).boxed(),
                Ok(req) => {
                    let notification = req.is_notification();
                    let id = req.id.clone().unwrap_or(RpcId::Null);
                    match &handler {
                        None => {
                            let r = (!notification).then(|| {
                                RpcResponse::error(id, RpcError::method_not_found(&req.method))
                            });
                            futures_util::future::ready(r).boxed()
                        }
                        Some(h) => {
                            let call = h.send(RpcCall {
                                method: req.method,
                                params: req.params,
                                caller: caller.clone(),
                                callee: callee.clone(),
                                caller_is_local,
                                notification,
                            });
                            async move {
                                let outcome = call.await.unwrap_or_else(|_| {
                                    Err(RpcError::internal("the method handler is gone"))
                                });
                                (!notification).then_some(RpcResponse { id, outcome })
                            }
                            .boxed()
                        }
                    }
                }
            })
            .collect();
        let is_batch = batch.is_batch;
        ctx.spawn(
            join_all(calls)
                .into_actor(self)
                .map(move |answers, act, ctx| {
                    let answers: Vec<RpcResponse> = answers.into_iter().flatten().collect();
                    if answers.is_empty() {
                        return; // notifications only: no response
                    }
                    let response = Event::builder(RPC_RESPONSE, callee.clone())
                        .to(caller)
                        .in_response_to_id(ev.id())
                        .payload(response_payload(is_batch, &answers))
                        .generated_at(act.now())
                        .addressing_sensitive(true)
                        .build_any();
                    match response {
                        Ok(r) => act.originate(r, ctx),
                        Err(e) => warn!(error = %e, "cannot build an RPC response"),
                    }
                }),
        );
    }

    pub(super) fn complete_rpc(&mut self, ev: &Event, target: &Address) {
        let Some(about) = ev.in_response_to() else {
            return;
        };
        let matches = self
            .rpc_calls
            .get(&about)
            .is_some_and(|c| &c.from == target && &c.to == ev.source());
        if !matches {
            debug!(%target, "RPC response to no pending call dropped");
            return;
        }
        self.sent.remove(&(about, target.clone()));
        if let Some(call) = self.rpc_calls.remove(&about) {
            let answer = parse_response_payload(ev.payload().unwrap_or_default())
                .map_err(|e| RpcCallError::BadAnswer(e.to_string()));
            let _ = call.tx.send(answer);
        }
    }
}
