//! webinos events across runtimes through a real messaging node and the WebSocket
//! bridge: one transmission per runtime, bcc narrowed by the node and stripped per
//! owner by the receiving dispatcher, delivery notifications back to the sender.

mod common;

use common::*;

const D: &str = "ev.test";

#[actix::test]
async fn cc_bcc_event_through_the_node_with_delivery_notifications() {
    let node = start_node(D, |_| {});
    let url = node.ws_url();
    cc_bcc_event_with_delivery(D, [&url, &url, &url]).await;
}
