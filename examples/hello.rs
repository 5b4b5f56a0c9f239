//! Two hyperties in one runtime: Alice asks Bob a question, Bob answers.
//!
//! `cargo run --example hello`

use hyperty::prelude::*;
use serde_json::json;
use tokio::sync::oneshot;

/// Answers every request with a greeting.
struct Bob {
    ctx: HypertyContext,
}

impl Actor for Bob {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Bob {
    type Result = ();
    fn handle(&mut self, Deliver(request): Deliver, _: &mut Context<Self>) {
        println!("Bob   received: {}", request.to_json());
        let greeting = format!("Hello, {}!", request.from);
        self.ctx
            .reply(&request, ResponseCode::Ok, json!({ "text": greeting }));
    }
}

/// Asks Bob once, at start, and hands the response to `main`.
struct Alice {
    ctx: HypertyContext,
    bob: Address,
    done: Option<oneshot::Sender<Message>>,
}

impl Actor for Alice {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let request = self
            .ctx
            .message(MessageType::Execute, self.bob.clone())
            .with_id(self.ctx.bus().next_id())
            .with_value(json!({ "text": "Who is there?" }));
        println!("Alice sends:    {}", request.to_json());
        let response = self.ctx.bus().post(request);
        ctx.spawn(response.into_actor(self).map(|r, act, _| {
            if let (Ok(r), Some(done)) = (r, act.done.take()) {
                let _ = done.send(r);
            }
        }));
    }
}

impl Handler<Deliver> for Alice {
    type Result = ();
    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::start(RuntimeConfig::new("example.com"))?;
    let bob = runtime
        .spawn_hyperty(HypertySpec::new("bob", "example.com", |ctx| Bob { ctx }))
        .await?;
    let (tx, rx) = oneshot::channel();
    let slot = std::sync::Mutex::new(Some(tx));
    let bob_url = bob.address().clone();
    runtime
        .spawn_hyperty(HypertySpec::new("alice", "example.com", move |ctx| Alice {
            ctx,
            bob: bob_url.clone(),
            done: slot.lock().ok().and_then(|mut s| s.take()),
        }))
        .await?;
    let response = rx.await?;
    println!("Alice received: {}", response.to_json());
    runtime.shutdown().await;
    Ok(())
}
