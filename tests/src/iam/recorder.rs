//! A recording proxy in front of the AWS endpoints: every request the functions' SDK clients
//! send passes through it to moto (or, for Lambda, to the local Invoke endpoint) unchanged, and
//! is kept with the identity that signed it. Each function signs with its own access key id (its
//! name), as each has its own role in a deployment, so a call is attributed to the function
//! that made it.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One request as it went out.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// The access key id that signed it: the function's name.
    pub principal: String,
    /// The signing service (`dynamodb`, `s3`, `secretsmanager`, `lambda`).
    pub service: String,
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RecordedCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn has_query(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }
}

/// The calls recorded so far.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<RecordedCall>>,
}

impl CallLog {
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().unwrap().clone()
    }
}

struct Upstreams {
    aws: String,
    lambda: String,
    log: Arc<CallLog>,
    http: reqwest::Client,
}

/// The proxy on loopback; requests signed for `lambda` go to `lambda`, the rest to `aws`.
pub struct Recorder {
    pub url: String,
    pub log: Arc<CallLog>,
    _server: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start(aws: &str, lambda: &str) -> Recorder {
        let log = Arc::new(CallLog::default());
        let upstreams = Arc::new(Upstreams {
            aws: aws.trim_end_matches('/').to_string(),
            lambda: lambda.trim_end_matches('/').to_string(),
            log: log.clone(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        });
        let app = Router::new().fallback(forward).with_state(upstreams);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Recorder { url, log, _server: server }
    }
}

/// `Credential=<key id>/<date>/<region>/<service>/aws4_request` of a SigV4 Authorization header.
fn signer(headers: &HeaderMap) -> (String, String) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let scope = auth.split("Credential=").nth(1).and_then(|c| c.split(',').next()).unwrap_or_default();
    let parts: Vec<&str> = scope.split('/').collect();
    (parts.first().unwrap_or(&"").to_string(), parts.get(3).unwrap_or(&"").to_string())
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn forward(State(up): State<Arc<Upstreams>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 256 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "recorder: body too large").into_response();
    };
    let (principal, service) = signer(&parts.headers);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let query = parts
        .uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    up.log.calls.lock().unwrap().push(RecordedCall {
        principal,
        service: service.clone(),
        method: parts.method.to_string(),
        path: decode(parts.uri.path()),
        query,
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let base = if service == "lambda" { &up.lambda } else { &up.aws };
    let mut outgoing = up.http.request(parts.method.clone(), format!("{base}{path_and_query}"));
    for (name, value) in parts.headers.iter().filter(|(n, _)| *n != "host" && *n != "content-length") {
        outgoing = outgoing.header(name, value);
    }
    match outgoing.body(body).send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = answer.headers().clone();
            headers.remove("transfer-encoding");
            headers.remove("content-length");
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, headers, bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("recorder: {e}")).into_response(),
    }
}
