//! One TLS stack for the whole process: rustls on `ring`, installed as the process default so
//! reqwest (built with `rustls-no-provider`) and the AWS SDK clients share it.

use std::sync::Once;

/// Installs rustls' `ring` provider as the process default (idempotent).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed: that one serves just as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
