//! An integration's REST hook subscription, as stored with it: where Capsule sends the events,
//! which events, and a digest of the secret that authenticates a delivery. Capsule signs
//! nothing, so a delivery proves itself by the secret in its URL path
//! (`<receiver>/<integration>/<secret>`); only its SHA-256 is stored, so neither the state nor
//! the receiver's read of it ever holds the secret, and it is compared in constant time.

use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The subscription of one integration (`capsule-sync hooks subscribe` writes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookSettings {
    /// The receiver's base URL (`hooks subscribe --receiver`); deliveries go to
    /// `<receiver>/<integration>/<secret>`.
    pub receiver: String,
    /// The hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// The events subscribed to, as Capsule names them (`party/updated`).
    pub events: Vec<String>,
    pub subscribed_at: DateTime<Utc>,
}

impl HookSettings {
    /// Whether `secret` is the integration's: compared digest to digest in constant time.
    pub fn accepts(&self, secret: &str) -> bool {
        let presented = digest(secret);
        bool::from(presented.as_bytes().ct_eq(self.secret_sha256.as_bytes()))
    }

    /// Whether the integration subscribed to `event`.
    pub fn subscribes(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// A new secret: 32 random bytes as hex (URL-safe as it is).
pub fn new_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(hex(&bytes))
}

/// The hex SHA-256 of a secret, as [`HookSettings::secret_sha256`] stores it.
pub fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL Capsule sends an integration's events to.
pub fn target_url(receiver: &str, integration: &str, secret: &SecretString) -> String {
    format!("{}/{integration}/{}", receiver.trim_end_matches('/'), secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_whose_digest_is_stored_is_accepted() {
        let secret = new_secret();
        assert_eq!(secret.expose_secret().len(), 64);
        let settings = HookSettings {
            receiver: "http://127.0.0.1:9/hooks".into(),
            secret_sha256: digest(secret.expose_secret()),
            events: vec!["party/updated".into()],
            subscribed_at: Utc::now(),
        };
        assert!(settings.accepts(secret.expose_secret()));
        assert!(!settings.accepts(&secret.expose_secret()[1..]));
        assert!(!settings.accepts(""));
        assert!(settings.subscribes("party/updated") && !settings.subscribes("party/deleted"));
        assert_eq!(target_url("http://h/hooks/", "acme", &SecretString::from("s3cr3t")), "http://h/hooks/acme/s3cr3t");
    }
}
