//! What to do with a failed attempt — decided in one place ([`classify_status`],
//! [`classify_transport`]), apart from how long to wait ([`backoff`]).

use std::time::Duration;

use backon::ExponentialBuilder;
use reqwest::StatusCode;

use capsule_core::SyncError;

/// The outcome of one failed attempt.
#[derive(Debug)]
pub enum Attempt {
    /// Retry with backoff: 5xx, 408, timeouts, dropped connections, cut or garbled bodies.
    Transient(SyncError),
    /// Wait for the rate-limit window to reset, then try again; doesn't use up retries.
    RateLimited(Duration),
    /// Stop: retrying the same request cannot succeed.
    Fatal(SyncError),
}

/// How a non-2xx status is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    Success,
    RateLimited,
    Auth,
    Transient,
    Rejected,
}

pub(crate) fn classify_status(status: StatusCode) -> StatusClass {
    match status.as_u16() {
        200..=299 => StatusClass::Success,
        429 => StatusClass::RateLimited,
        401 | 403 => StatusClass::Auth,
        408 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Rejected,
    }
}

/// Transport errors (connect, timeout, reset, body cut) are all worth another try.
pub(crate) fn classify_transport(error: &reqwest::Error, request: &str) -> Attempt {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "connection dropped while reading the body"
    } else {
        "request failed"
    };
    // reqwest's Display includes the URL, which holds no secret (the token is a header).
    Attempt::Transient(SyncError::Transient { request: request.to_string(), message: format!("{what}: {error}") })
}

/// What went wrong in a transient failure, in a few words for a live view: `connection
/// refused`, `HTTP 503: …`, `timed out: …`.
pub(crate) fn cause(error: &SyncError) -> String {
    match error {
        SyncError::Transient { message, .. } => match message.split_once(": ") {
            Some((what, _)) if what.starts_with("HTTP ") => message.clone(),
            Some((what, detail)) => format!("{what}: {}", detail.rsplit(": ").next().unwrap_or(detail)),
            None => message.clone(),
        },
        other => other.to_string(),
    }
}

/// Why a connection could not be made, when that points at the setup rather than an outage:
/// the problem in a line and its fix. Connect timeouts are not among them (a slow network looks
/// the same), nor is anything after a connection was made.
pub(crate) fn setup_problem(error: &reqwest::Error) -> Option<(String, &'static str)> {
    if !error.is_connect() || error.is_timeout() {
        return None;
    }
    let io_kinds = || source_chain(error).filter_map(|e| e.downcast_ref::<std::io::Error>()).map(|e| e.kind());
    let innermost = source_chain(error).last().map(ToString::to_string).unwrap_or_else(|| error.to_string());
    Some(if io_kinds().any(|k| k == std::io::ErrorKind::ConnectionRefused) {
        (
            "connection refused (nothing listens at that host and port)".into(),
            "check the host and port of --api-base-url (Capsule's is https://api.capsulecrm.com)",
        )
    } else if source_chain(error).any(|e| e.is::<rustls::Error>()) {
        (
            format!("the TLS handshake failed ({innermost})"),
            "check the scheme of --api-base-url (https for Capsule) and any proxy or certificate in between",
        )
    } else {
        (
            format!("could not connect ({innermost})"),
            "check the host name of --api-base-url and this machine's DNS and network",
        )
    })
}

/// `error` and every error under it. An I/O error that wraps another leads to it (its own
/// `source()` skips the wrapped error: the TLS handshake's rustls error sits two I/O errors deep).
fn source_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
        None => e.source(),
    })
}

/// The retry schedule: exponential with full jitter, bounded in count and per-wait length.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 6, min_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

pub fn backoff(policy: &RetryPolicy) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries as usize)
        .with_jitter()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of one GET to `url` (loopback only; `resolver` answers names instead of DNS).
    async fn failure(url: &str, resolver: Option<std::sync::Arc<dyn reqwest::dns::Resolve>>) -> reqwest::Error {
        capsule_core::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(resolver) = resolver {
            builder = builder.dns_resolver(resolver);
        }
        builder.build().unwrap().get(url).send().await.unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_setup_problem_named_with_its_fix() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (problem, fix) = setup_problem(&failure(&format!("http://127.0.0.1:{port}/"), None).await).unwrap();
        assert!(problem.contains("connection refused"), "{problem}");
        assert!(fix.contains("port of --api-base-url"), "{fix}");
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_is_a_setup_problem_named_with_its_fix() {
        // A plain-text server where https was asked for.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
            }
        });
        let (problem, fix) = setup_problem(&failure(&format!("https://127.0.0.1:{port}/"), None).await).unwrap();
        assert!(problem.contains("TLS handshake failed"), "{problem}");
        assert!(fix.contains("scheme"), "{fix}");
    }

    /// Resolves no name, as DNS does for a host that does not exist (no query leaves the machine).
    struct NoSuchHost;

    impl reqwest::dns::Resolve for NoSuchHost {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let message = format!("failed to lookup address information: {} not known", name.as_str());
            Box::pin(async move { Err(message.into()) })
        }
    }

    #[tokio::test]
    async fn an_unknown_host_is_a_setup_problem_named_with_its_fix() {
        let error = failure("https://capsule.example.invalid/", Some(std::sync::Arc::new(NoSuchHost))).await;
        let (problem, fix) = setup_problem(&error).unwrap();
        assert!(problem.contains("capsule.example.invalid not known"), "{problem}");
        assert!(fix.contains("host name of --api-base-url"), "{fix}");
    }

    #[test]
    fn statuses_are_classified_as_documented() {
        let class = |s: u16| classify_status(StatusCode::from_u16(s).unwrap());
        assert_eq!(class(200), StatusClass::Success);
        assert_eq!(class(429), StatusClass::RateLimited);
        assert_eq!(class(401), StatusClass::Auth);
        assert_eq!(class(403), StatusClass::Auth);
        for s in [500, 502, 503, 504, 408] {
            assert_eq!(class(s), StatusClass::Transient, "{s}");
        }
        for s in [400, 404, 405, 422] {
            assert_eq!(class(s), StatusClass::Rejected, "{s}");
        }
    }
}
