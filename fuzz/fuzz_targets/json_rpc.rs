//! JSON-RPC payloads (`parse_request_payload`, `parse_response_payload`): never
//! panic; what parses serialises back (`request_payload`, `response_payload`) to
//! text that parses to the same requests and responses.
#![no_main]

use hyperty_actors::events::rpc::{
    parse_request_payload, parse_response_payload, request_payload, response_payload, RpcRequest,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(batch) = parse_request_payload(text) {
        let requests: Vec<RpcRequest> = batch.items.iter().filter_map(|i| i.clone().ok()).collect();
        if !requests.is_empty() {
            let wire = request_payload(batch.is_batch, &requests);
            let again = match parse_request_payload(&wire) {
                Ok(b) => b,
                Err(e) => panic!("{wire} (from {text}) does not parse back: {e}"),
            };
            let back: Vec<RpcRequest> = again.items.into_iter().filter_map(Result::ok).collect();
            assert_eq!(back, requests, "the round trip changed {text}");
        }
        // the answers to invalid items serialise too
        let answers: Vec<_> = batch.items.into_iter().filter_map(Result::err).collect();
        if !answers.is_empty() {
            let wire = response_payload(true, &answers);
            assert!(parse_response_payload(&wire).is_ok(), "{wire}");
        }
    }
    if let Ok(responses) = parse_response_payload(text) {
        let wire = response_payload(responses.len() != 1, &responses);
        let again = match parse_response_payload(&wire) {
            Ok(r) => r,
            Err(e) => panic!("{wire} (from {text}) does not parse back: {e}"),
        };
        assert_eq!(again, responses, "the round trip changed {text}");
    }
});
