//! A Lambda Function URL on loopback: each HTTP request becomes a Function URL event (payload
//! format 2.0: `rawPath`, `body`, `isBase64Encoded`, the method) invoked synchronously through
//! the local Invoke endpoint, and the function's `{statusCode, headers, body}` becomes the HTTP
//! answer — what AWS does in front of a function with a URL.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use axum::body::{Body, to_bytes};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

/// Serves `function`'s URL; its base URL (with a trailing slash, as AWS gives it).
pub async fn start(lambda: aws_sdk_lambda::Client, function: &str) -> (String, tokio::task::JoinHandle<()>) {
    let function = function.to_string();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Body| {
        let (lambda, function) = (lambda.clone(), function.clone());
        async move { forward(&lambda, &function, method, uri, body).await }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

async fn forward(lambda: &aws_sdk_lambda::Client, function: &str, method: Method, uri: Uri, body: Body) -> Response {
    // A Function URL accepts up to 6 MB.
    let Ok(bytes) = to_bytes(body, 6 << 20).await else { return StatusCode::PAYLOAD_TOO_LARGE.into_response() };
    let event = json!({
        "version": "2.0",
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or(""),
        "body": base64::engine::general_purpose::STANDARD.encode(&bytes),
        "isBase64Encoded": true,
        "requestContext": {"http": {"method": method.as_str(), "path": uri.path()}},
    });
    let out = lambda
        .invoke()
        .function_name(function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(event.to_string()))
        .send()
        .await;
    let Ok(out) = out else { return StatusCode::BAD_GATEWAY.into_response() };
    if out.function_error().is_some() {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    let answer: Value =
        serde_json::from_slice(out.payload().map_or(&b"null"[..], |p| p.as_ref())).unwrap_or(Value::Null);
    let status = answer["statusCode"].as_u64().and_then(|s| StatusCode::from_u16(s as u16).ok());
    let Some(status) = status else { return StatusCode::BAD_GATEWAY.into_response() };
    (status, answer["body"].as_str().unwrap_or("").to_string()).into_response()
}
