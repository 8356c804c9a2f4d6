//! How a simulator instance is started.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How `Link: rel="next"` URLs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LinkStyle {
    /// Only `?page=N`, exactly like the documentation's example: a client that follows it
    /// verbatim loses `perPage`, `since`, `embed` and `status`, so it must re-add its own.
    #[default]
    PageOnly,
    /// Every query parameter of the request, with `page` replaced.
    Full,
}

/// Settings of one simulator instance. `SimConfig::default()` is a small demo account.
/// `Debug` leaves the token out.
#[derive(Clone)]
pub struct SimConfig {
    /// Address to bind; port 0 picks a free one. Always loopback in tests.
    pub listen: SocketAddr,
    /// The only Bearer token accepted.
    pub token: String,
    /// Seed of the generated account: same seed and size, same data.
    pub seed: u64,
    /// Number of parties; every other collection scales with it.
    pub parties: usize,
    /// Requests allowed per rate-limit window (Capsule: 4000 per hour).
    pub rate_limit: u32,
    /// Length of the rate-limit window (Capsule: one hour). Tests use seconds.
    pub rate_window: Duration,
    /// How next-page links are written.
    pub link_style: LinkStyle,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("token", &"[redacted]")
            .field("seed", &self.seed)
            .field("parties", &self.parties)
            .field("rate_limit", &self.rate_limit)
            .field("rate_window", &self.rate_window)
            .field("link_style", &self.link_style)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: "demo-token".to_string(),
            seed: 42,
            parties: 500,
            rate_limit: 4000,
            rate_window: Duration::from_secs(3600),
            link_style: LinkStyle::PageOnly,
        }
    }
}
