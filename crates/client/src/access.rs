//! What a deployment lets an integration reach. An integration item is data that an operator
//! (or anything that can write the state store) controls; where its token is read from and
//! which host receives it are decided here, by the deployment's environment, never by the item.
//!
//! - **API host**: Capsule's production API, plus base URLs the deployment lists in
//!   `CAPSULE_ALLOWED_API_URLS` (template parameter `AllowedApiUrls`). Plain `http` only for a
//!   loopback host. The local backend also accepts any loopback URL (a simulator or proxy on
//!   the operator's own machine).
//! - **Token sources**: locally `env:` and `file:`. On the AWS backend only `secretsmanager:`,
//!   and only the integration's own secret: `<CAPSULE_SECRET_PREFIX><integration>` or the one
//!   `CAPSULE_SECRET_ALLOW_LIST` (`name=secret-id,…`) names for it. An `env:` source would hand
//!   the function's own environment (its AWS credentials) to whatever host the item names.
//! - **OAuth refresh** goes only to Capsule's token endpoint, or `CAPSULE_OAUTH_TOKEN_URL`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use url::{Host, Url};

use capsule_core::integration::DEFAULT_BASE_URL;
use capsule_core::integration::{Integration, TokenSource};
use capsule_core::{Result, SyncError};

/// Capsule's OAuth token endpoint.
pub(crate) const DEFAULT_OAUTH_TOKEN_URL: &str = "https://api.capsulecrm.com/oauth/token";
/// The stack's default secret name prefix (template parameter `SecretPrefix`).
pub const DEFAULT_SECRET_PREFIX: &str = "capsule-sync/";

/// Which token sources an integration may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRule {
    /// The local backend: an environment variable or file of the operator's own machine.
    Local,
    /// The AWS backend: only the integration's own Secrets Manager secret.
    OwnSecret {
        /// `<prefix><integration>` is an integration's secret.
        prefix: String,
        /// Explicit exceptions: integration name → secret id (name or ARN).
        allowed: BTreeMap<String, String>,
    },
}

/// A deployment's access rules (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Base URLs allowed besides Capsule's production API.
    pub api_urls: Vec<Url>,
    /// Any loopback URL is allowed too (the local backend).
    pub any_loopback: bool,
    pub tokens: TokenRule,
    /// Where OAuth refresh tokens are exchanged.
    pub oauth_token_url: Url,
}

impl Default for AccessPolicy {
    /// The strictest policy: Capsule's production API, own secrets under the default prefix.
    fn default() -> AccessPolicy {
        AccessPolicy {
            api_urls: Vec::new(),
            any_loopback: false,
            tokens: TokenRule::OwnSecret { prefix: DEFAULT_SECRET_PREFIX.into(), allowed: BTreeMap::new() },
            oauth_token_url: Url::parse(DEFAULT_OAUTH_TOKEN_URL).expect("a valid constant"),
        }
    }
}

/// Reads an optional, non-empty environment variable.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where a deployment's settings are read: this process's environment, or a deployed
/// function's (`capsule-sync doctor`).
pub type Settings<'a> = &'a dyn Fn(&str) -> Option<String>;

impl AccessPolicy {
    /// The AWS backend's policy (Lambda functions and `--backend aws`), from the environment.
    pub fn aws_from_env() -> Result<AccessPolicy> {
        AccessPolicy::aws_from(&env_var)
    }

    /// The AWS backend's policy from a deployment's settings (its `CAPSULE_*` variables).
    pub fn aws_from(settings: Settings) -> Result<AccessPolicy> {
        let setting = |name: &str| settings(name).filter(|v| !v.trim().is_empty());
        let prefix = setting("CAPSULE_SECRET_PREFIX").unwrap_or_else(|| DEFAULT_SECRET_PREFIX.into());
        let allowed = match setting("CAPSULE_SECRET_ALLOW_LIST") {
            Some(list) => parse_secret_allow_list(&list)?,
            None => BTreeMap::new(),
        };
        AccessPolicy { tokens: TokenRule::OwnSecret { prefix, allowed }, ..AccessPolicy::urls_from(&setting)? }
            .checked()
    }

    /// The local backend's policy: env/file tokens, loopback URLs allowed.
    pub fn local_from_env() -> Result<AccessPolicy> {
        Ok(AccessPolicy { tokens: TokenRule::Local, any_loopback: true, ..AccessPolicy::urls_from(&env_var)? })
    }

    /// A policy for the local backend that also allows the given base URLs.
    pub fn local_allowing(urls: &[&str]) -> Result<AccessPolicy> {
        let api_urls = urls.iter().map(|u| allowed_entry("allowed API URL", u)).collect::<Result<_>>()?;
        Ok(AccessPolicy { api_urls, tokens: TokenRule::Local, any_loopback: true, ..AccessPolicy::default() })
    }

    /// The default (strict) policy with these base URLs allowed as well.
    pub fn allowing(mut self, urls: &[&str]) -> Result<AccessPolicy> {
        for url in urls {
            self.api_urls.push(allowed_entry("allowed API URL", url)?);
        }
        Ok(self)
    }

    fn urls_from(setting: Settings) -> Result<AccessPolicy> {
        let api_urls = match setting("CAPSULE_ALLOWED_API_URLS") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| allowed_entry("CAPSULE_ALLOWED_API_URLS", u))
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let oauth_token_url = match setting("CAPSULE_OAUTH_TOKEN_URL") {
            Some(url) => allowed_entry("CAPSULE_OAUTH_TOKEN_URL", &url)?,
            None => AccessPolicy::default().oauth_token_url,
        };
        Ok(AccessPolicy { api_urls, oauth_token_url, ..AccessPolicy::default() })
    }

    fn checked(self) -> Result<AccessPolicy> {
        if let TokenRule::OwnSecret { prefix, .. } = &self.tokens
            && prefix.trim().is_empty()
        {
            return Err(SyncError::Config(
                "CAPSULE_SECRET_PREFIX is empty: every secret in the account would count as an integration's".into(),
            ));
        }
        Ok(self)
    }

    /// Checks an integration's base URL and token source; nothing is read or sent before this.
    pub fn check(&self, integration: &Integration) -> Result<()> {
        self.check_api_url(&integration.api_base_url)?;
        self.check_token_source(integration)
    }

    /// The base URL, if this deployment allows it.
    pub fn check_api_url(&self, base_url: &str) -> Result<Url> {
        let url = Url::parse(base_url)
            .map_err(|e| SyncError::Config(format!("API base URL `{base_url}` is not a valid URL: {e}")))?;
        check_scheme("API base URL", &url)?;
        let allowed = same_base(&url, &Url::parse(DEFAULT_BASE_URL).expect("a valid constant"))
            || self.api_urls.iter().any(|a| same_base(&url, a))
            || (self.any_loopback && is_loopback(&url));
        if allowed {
            return Ok(url);
        }
        let mut listed = vec![DEFAULT_BASE_URL.to_string()];
        listed.extend(self.api_urls.iter().map(|u| u.as_str().trim_end_matches('/').to_string()));
        Err(SyncError::Config(format!(
            "API base URL `{base_url}` is not allowed by this deployment (allowed: {}). The integration's token \
             would be sent there; an operator allows another host with CAPSULE_ALLOWED_API_URLS (the stack's \
             AllowedApiUrls parameter), not in the integration",
            listed.join(", ")
        )))
    }

    /// Whether the integration may read its token from where it says.
    pub fn check_token_source(&self, integration: &Integration) -> Result<()> {
        let TokenRule::OwnSecret { prefix, allowed } = &self.tokens else { return Ok(()) };
        let own =
            allowed.get(integration.name.as_str()).cloned().unwrap_or_else(|| format!("{prefix}{}", integration.name));
        match &integration.token {
            TokenSource::SecretsManager { secret_id } if same_secret(secret_id, &own) => Ok(()),
            TokenSource::SecretsManager { secret_id } => Err(SyncError::Config(format!(
                "token source secretsmanager:{secret_id} is not integration `{}`'s own secret: on the AWS backend \
                 an integration reads only `{own}` (or the secret CAPSULE_SECRET_ALLOW_LIST names for it)",
                integration.name
            ))),
            other => Err(SyncError::Config(format!(
                "token source {other} is not allowed on the AWS backend: the function would read its own \
                 environment or files (its AWS credentials among them). Store the token in Secrets Manager as \
                 `{own}` ({{\"token\": \"…\"}}) and use --token secretsmanager:{own}"
            ))),
        }
    }
}

/// An allowed URL from the deployment: https, or http on a loopback host.
fn allowed_entry(what: &str, text: &str) -> Result<Url> {
    let url = Url::parse(text.trim()).map_err(|e| SyncError::Config(format!("{what}: `{text}` is not a URL: {e}")))?;
    check_scheme(what, &url)?;
    Ok(url)
}

/// https anywhere; http only where the traffic stays on this machine.
fn check_scheme(what: &str, url: &Url) -> Result<()> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(SyncError::Config(format!(
            "{what} `{url}` uses plain http to a host that is not loopback: the token would cross the network \
             in clear text; use https"
        ))),
        other => Err(SyncError::Config(format!("{what} `{url}` must be https (not {other})"))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Same scheme, host, port and path (a trailing `/` aside).
fn same_base(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin() && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
}

/// A secret named by name or by ARN (`arn:…:secret:<name>-<6 random chars>`).
fn same_secret(given: &str, own: &str) -> bool {
    let name = |id: &str| -> String {
        match id.split_once(":secret:") {
            Some((arn, rest)) if arn.starts_with("arn:") => {
                // Secrets Manager appends `-` and six characters to the name in an ARN.
                match rest.rsplit_once('-') {
                    Some((name, suffix)) if suffix.len() == 6 => name.to_string(),
                    _ => rest.to_string(),
                }
            }
            _ => id.to_string(),
        }
    };
    given == own || name(given) == name(own)
}

/// `acme=capsule-sync/acme-prod,beta=arn:…` → {acme: …, beta: …}.
fn parse_secret_allow_list(text: &str) -> Result<BTreeMap<String, String>> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((name, secret)) if !name.trim().is_empty() && !secret.trim().is_empty() => {
                Ok((name.trim().to_string(), secret.trim().to_string()))
            }
            _ => Err(SyncError::Config(format!(
                "CAPSULE_SECRET_ALLOW_LIST entry `{entry}` is not `integration=secret-id`"
            ))),
        })
        .collect()
}

/// Whether a next-page link stays where the token may go: the request's scheme, host and port.
pub(crate) fn check_link(link: &Url, request: &Url) -> Result<()> {
    if link.origin() == request.origin() {
        return Ok(());
    }
    Err(SyncError::BadResponse {
        request: format!("GET {}", request.path()),
        message: format!(
            "the next-page link `{link}` leaves {}: not followed (the token is sent only to the API host)",
            request.origin().ascii_serialization()
        ),
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn integration(name: &str, token: &str, url: &str) -> Integration {
        let mut i = Integration::new(name.parse().unwrap(), token.parse().unwrap(), Utc::now());
        i.api_base_url = url.into();
        i
    }

    #[test]
    fn only_capsule_and_listed_hosts_are_allowed() {
        let strict = AccessPolicy::default();
        assert!(strict.check_api_url(DEFAULT_BASE_URL).is_ok());
        assert!(strict.check_api_url("https://api.capsulecrm.com/api/v2/").is_ok());
        let err = strict.check_api_url("https://evil.example/api/v2").unwrap_err().to_string();
        assert!(err.contains("not allowed") && err.contains("CAPSULE_ALLOWED_API_URLS"), "{err}");
        assert!(strict.check_api_url("http://127.0.0.1:9/api/v2").is_err(), "loopback needs listing on AWS");
        assert!(strict.check_api_url("https://api.capsulecrm.com:8443/api/v2").is_err(), "another port");

        let listed = AccessPolicy::default().allowing(&["https://proxy.internal/api/v2"]).unwrap();
        assert!(listed.check_api_url("https://proxy.internal/api/v2").is_ok());
        assert!(listed.check_api_url("https://proxy.internal/other").is_err());
        let err = AccessPolicy::default().allowing(&["http://proxy.internal/api/v2"]).unwrap_err().to_string();
        assert!(err.contains("plain http"), "{err}");

        let local = AccessPolicy::local_allowing(&[]).unwrap();
        assert!(local.check_api_url("http://127.0.0.1:9/api/v2").is_ok());
        assert!(local.check_api_url("http://localhost:9/api/v2").is_ok());
        assert!(local.check_api_url("http://[::1]:9/api/v2").is_ok());
        let err = local.check_api_url("http://10.0.0.1/api/v2").unwrap_err().to_string();
        assert!(err.contains("plain http"), "{err}");
        assert!(local.check_api_url("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn the_aws_backend_reads_only_the_integrations_own_secret() {
        let policy = AccessPolicy::default();
        let ok = integration("acme", "secretsmanager:capsule-sync/acme", DEFAULT_BASE_URL);
        assert!(policy.check(&ok).is_ok());
        let arn = "secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:capsule-sync/acme-AbC123";
        assert!(policy.check(&integration("acme", arn, DEFAULT_BASE_URL)).is_ok());
        for bad in ["secretsmanager:capsule-sync/other", "secretsmanager:capsule-sync/acme-prod"] {
            let err = policy.check(&integration("acme", bad, DEFAULT_BASE_URL)).unwrap_err().to_string();
            assert!(err.contains("not integration `acme`'s own secret"), "{err}");
        }
        for bad in ["env:AWS_SECRET_ACCESS_KEY", "file:/proc/self/environ"] {
            let err = policy.check(&integration("acme", bad, DEFAULT_BASE_URL)).unwrap_err().to_string();
            assert!(err.contains("not allowed on the AWS backend"), "{err}");
            assert!(err.contains("secretsmanager:capsule-sync/acme"), "says what to do: {err}");
        }
        let allowed = parse_secret_allow_list("acme = shared/acme-prod, beta=x").unwrap();
        let listed = AccessPolicy { tokens: TokenRule::OwnSecret { prefix: "p/".into(), allowed }, ..policy };
        assert!(listed.check(&integration("acme", "secretsmanager:shared/acme-prod", DEFAULT_BASE_URL)).is_ok());
        assert!(listed.check(&integration("acme", "secretsmanager:p/acme", DEFAULT_BASE_URL)).is_err());
        assert!(listed.check(&integration("gamma", "secretsmanager:p/gamma", DEFAULT_BASE_URL)).is_ok());
        assert!(parse_secret_allow_list("acme").unwrap_err().to_string().contains("integration=secret-id"));
    }

    #[test]
    fn local_integrations_use_env_or_file_tokens() {
        let local = AccessPolicy::local_allowing(&[]).unwrap();
        assert!(local.check(&integration("acme", "env:CAPSULE_TOKEN", DEFAULT_BASE_URL)).is_ok());
        assert!(local.check(&integration("acme", "file:/tmp/t", "http://127.0.0.1:1/api/v2")).is_ok());
    }

    #[test]
    fn next_links_keep_the_requests_origin() {
        let request = Url::parse("https://api.capsulecrm.com/api/v2/parties?page=1").unwrap();
        assert!(check_link(&Url::parse("https://api.capsulecrm.com/api/v2/parties?page=2").unwrap(), &request).is_ok());
        for bad in [
            "https://evil.example/api/v2/parties?page=2",
            "http://api.capsulecrm.com/api/v2/parties?page=2",
            "https://api.capsulecrm.com:444/api/v2/parties?page=2",
        ] {
            let err = check_link(&Url::parse(bad).unwrap(), &request).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("not followed"), "{err}");
        }
    }
}
