//! The hook-receiver function: Capsule's REST hook deliveries, through the function's URL.
//! Each delivery is checked as `hooks serve` checks it (the engine's `hooks::receiver`) and
//! landed as its own hook run before the answer: an invocation holds nothing between
//! deliveries, so a 2xx means the rows are in S3 and their manifest is published.
//!
//! Its role reads the state table's items (an integration's stored secret digest and events)
//! and writes objects under the stack's prefix; nothing else.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

use capsule_core::ports::{ObjectSink, StateStore};
use capsule_engine::hooks::receiver::{self, Answer};
use capsule_engine::hooks::{Limits, RateLimiter, Rejection, landing};

/// What the function needs, built once at cold start.
#[derive(Clone)]
pub struct HookReceiverDeps {
    pub state: Arc<dyn StateStore>,
    pub sink: Arc<dyn ObjectSink>,
    pub limiter: Arc<RateLimiter>,
    pub limits: Limits,
}

/// A Function URL request (payload format 2.0), the fields a delivery needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionUrlRequest {
    pub raw_path: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub is_base64_encoded: bool,
    pub request_context: RequestContext,
}

#[derive(Debug, Deserialize)]
pub struct RequestContext {
    pub http: RequestHttp,
}

#[derive(Debug, Deserialize)]
pub struct RequestHttp {
    pub method: String,
}

/// A Function URL response.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionUrlResponse {
    pub status_code: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl From<Answer> for FunctionUrlResponse {
    fn from(answer: Answer) -> FunctionUrlResponse {
        let headers = HashMap::from([("content-type".to_string(), "application/json".to_string())]);
        FunctionUrlResponse { status_code: answer.status, headers, body: answer.body }
    }
}

/// One request: a delivery landed (202) or refused (4xx), or 503 when it could not be landed.
/// An event that is not a Function URL request is answered 400, never an invocation error
/// (which the URL would show as a bare 502).
pub async fn handler(event: serde_json::Value, deps: &HookReceiverDeps) -> FunctionUrlResponse {
    let request: FunctionUrlRequest = match serde_json::from_value(event) {
        Ok(request) => request,
        Err(e) => return refuse(Rejection::Malformed(format!("not a Function URL request: {e}"))),
    };
    if request.request_context.http.method != "POST" {
        return refuse(Rejection::MethodNotAllowed);
    }
    let body = match (request.body, request.is_base64_encoded) {
        (None, _) => Vec::new(),
        (Some(text), false) => text.into_bytes(),
        (Some(text), true) => match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(bytes) => bytes,
            Err(e) => return refuse(Rejection::Malformed(format!("the body is not valid base64: {e}"))),
        },
    };
    let sink = deps.sink.clone();
    let land = |integration, delivery| async move {
        landing::land(sink.as_ref(), &integration, std::slice::from_ref(&delivery)).await.map(|_| ())
    };
    receiver::receive(deps.state.as_ref(), &deps.limiter, &deps.limits, &request.raw_path, &body, land).await.into()
}

fn refuse(rejection: Rejection) -> FunctionUrlResponse {
    Answer::refused(&rejection.into(), None).into()
}
