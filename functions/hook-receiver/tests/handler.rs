//! The handler's answers to what is not a delivery, before any state is read: each a 4xx with
//! the reason in words, never an invocation error (a Function URL would show that as a bare 502).

use std::sync::Arc;

use capsule_local::{LocalSink, StateFile};
use hook_receiver::{HookReceiverDeps, handler};
use serde_json::json;

fn deps(dir: &std::path::Path) -> HookReceiverDeps {
    HookReceiverDeps {
        state: Arc::new(StateFile::new(dir)),
        sink: Arc::new(LocalSink::new(dir.join("output"))),
        limiter: Arc::default(),
        limits: capsule_engine::hooks::Limits::default(),
    }
}

fn request(method: &str, path: &str, body: &str, base64: bool) -> serde_json::Value {
    json!({"version": "2.0", "rawPath": path, "body": body, "isBase64Encoded": base64,
           "requestContext": {"http": {"method": method}}})
}

#[tokio::test]
async fn what_is_not_a_delivery_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    let cases = [
        (json!({"source": "aws.events"}), 400, "not a Function URL request"),
        (request("GET", "/acme/secret", "", false), 405, "only POST"),
        (request("POST", "/acme/secret", "%%%", true), 400, "not valid base64"),
        (request("POST", "/acme", "{}", false), 404, "<integration>/<secret>"),
        (request("POST", "/acme/secret", "{}", false), 403, "not the integration's"),
    ];
    for (event, status, says) in cases {
        let answer = handler(event, &deps).await;
        assert_eq!(answer.status_code, status, "{}", answer.body);
        assert!(answer.body.contains(says), "{}", answer.body);
        assert_eq!(answer.headers["content-type"], "application/json");
    }
    assert!(!dir.path().join("output").exists(), "nothing landed");
}
