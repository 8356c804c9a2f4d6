//! A Capsule CRM API v2 simulator over real HTTP.
//!
//! It serves every endpoint the connector's 22 tables read, with the real envelope keys, field
//! names, `Link` pagination, `since` filtering, Bearer auth and the documented rate limit, from a
//! deterministic generated account. Tests, the CLI demo and benchmarks start it in-process with
//! [`start`]; the `capsule-sim` binary starts it standalone. The admin API (`/_admin/*`) and the
//! [`SimHandle`] methods mutate the account, inject faults and read request statistics.
//! Subscribed REST hooks ([`hooks`]) are delivered on every change.

mod api;
pub mod config;
pub mod dataset;
pub mod faults;
pub mod hooks;
mod ratelimit;
mod server;
pub mod stats;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{LinkStyle, SimConfig};
pub use dataset::{Account, Entity, Mutation, MutationKind, MutationOp, MutationOutcome, TableCounts};
pub use faults::{Fault, FaultRule};
pub use stats::Stats;

use server::Shared;

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Generates the account, binds `config.listen` and serves until the handle is stopped.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let account = Account::generate(config.seed, config.parties);
    let shared = Arc::new(Shared {
        base_url: format!("http://{addr}/api/v2"),
        link_base: RwLock::new(None),
        account: RwLock::new(account),
        limiter: Mutex::new(ratelimit::RateWindow::new(config.rate_limit, config.rate_window)),
        faults: Mutex::new(faults::FaultPlan::new(config.seed)),
        stats: Mutex::new(Stats::default()),
        mutations: Mutex::new(0),
        hooks: hooks::Hooks::new(config.seed),
        token: RwLock::new(config.token.clone()),
        config,
    });
    let app = server::router(shared.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "capsule-sim server stopped with an error");
        }
    });
    Ok(SimHandle { shared, addr, stop: Some(stop), task: Some(task) })
}

impl SimHandle {
    /// `http://127.0.0.1:PORT/api/v2` — what a Capsule client uses as its base URL.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// `http://127.0.0.1:PORT` — the admin API lives under `/_admin`.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> String {
        self.shared.token.read().unwrap().clone()
    }

    /// Accepts only `token` from now on (the old one expired or was revoked).
    pub fn set_token(&self, token: &str) {
        *self.shared.token.write().unwrap() = token.to_string();
    }

    /// Writes next-page links under another base URL (`None`: this server's own again).
    pub fn set_link_base(&self, base: Option<&str>) {
        *self.shared.link_base.write().unwrap() = base.map(str::to_string);
    }

    /// Changes the account (update / create / delete / restrict records) at the current time.
    pub fn mutate(&self, m: Mutation) -> Result<MutationOutcome, String> {
        self.shared.mutate(&m)
    }

    /// Shorthand for [`SimHandle::mutate`].
    pub fn mutate_n(&self, kind: MutationKind, op: MutationOp, count: usize) -> Result<MutationOutcome, String> {
        self.mutate(Mutation { kind, op, count, ids: Vec::new() })
    }

    /// What the delivery network does to REST hook deliveries from now on.
    pub fn set_hook_faults(&self, faults: hooks::DeliveryFaults) {
        self.shared.hooks.set_faults(faults);
    }

    /// REST hook deliveries so far.
    pub fn hook_stats(&self) -> hooks::DeliveryStats {
        self.shared.hooks.stats()
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.shared.faults.lock().unwrap().add(rule);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Requests that arrived in each rate-limit window so far (429s included), oldest first.
    pub fn rate_windows(&self) -> Vec<u32> {
        self.shared.limiter.lock().unwrap().windows()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }

    pub fn reset_stats(&self) {
        *self.shared.stats.lock().unwrap() = Stats::default();
    }

    /// Rows per connector table; `since` limits the incremental tables and deleted feeds.
    pub fn table_counts(&self, since: Option<DateTime<Utc>>) -> TableCounts {
        self.shared.account.read().unwrap().table_counts(since)
    }

    /// Runs `f` on the account as it is now (for tests that check exact contents).
    pub fn with_account<R>(&self, f: impl FnOnce(&Account) -> R) -> R {
        f(&self.shared.account.read().unwrap())
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
