//! The warehouse kit: for one integration and one engine, the SQL (and, where an engine loads
//! through a command-line tool, the script) that turns the output files into tables.
//!
//! Per selected table it declares a raw table `<integration>_<table>` (append-only: every
//! committed run's rows with `_run_id`, `_extracted_at` and the `dt` partition; no key, since
//! incremental runs overlap at the lookback boundary and full tables are snapshots), loads that
//! read each run's published manifest as the list of its files (so a failed or unfinished
//! attempt is never loaded), and a current-state view `<integration>_<table>_current`.
//! `capsule-sync warehouse` writes a kit where asked; every run writes all five under
//! `_meta/<integration>/warehouse/<engine>/`.

mod athena;
mod bigquery;
mod duckdb;
mod model;
mod redshift;
mod snowflake;
mod views;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use futures::StreamExt;

use capsule_core::integration::Integration;
use capsule_core::ports::{ObjectSink, StateStore};
use capsule_core::{Result, SyncError};

pub use duckdb::raw_types as duckdb_raw_types;
pub use model::kit_tables;

/// A warehouse engine the kit is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Engine {
    DuckDb,
    BigQuery,
    Snowflake,
    Redshift,
    Athena,
}

impl Engine {
    pub const ALL: &[Engine] = &[Engine::DuckDb, Engine::BigQuery, Engine::Snowflake, Engine::Redshift, Engine::Athena];

    /// The name used by `--engine` and in the kit's folder.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::DuckDb => "duckdb",
            Engine::BigQuery => "bigquery",
            Engine::Snowflake => "snowflake",
            Engine::Redshift => "redshift",
            Engine::Athena => "athena",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Engine {
    type Err = SyncError;

    fn from_str(s: &str) -> Result<Engine> {
        let wanted = s.trim().to_ascii_lowercase();
        Engine::ALL.iter().copied().find(|e| e.as_str() == wanted).ok_or_else(|| {
            let valid: Vec<&str> = Engine::ALL.iter().map(|e| e.as_str()).collect();
            SyncError::Config(format!("unknown warehouse engine `{s}`; valid engines: {}", valid.join(", ")))
        })
    }
}

/// Where the output files are, as the warehouse reads them: an absolute directory, or an
/// `s3://bucket/prefix` (or `gs://…` for BigQuery) URL. No trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(String);

impl Location {
    /// Checks and normalises a location: an absolute path or a `s3://` / `gs://` URL.
    pub fn new(root: &str) -> Result<Location> {
        let root = root.trim().trim_end_matches('/');
        let url = root.starts_with("s3://") || root.starts_with("gs://");
        if !(url || root.starts_with('/')) {
            return Err(SyncError::Config(format!(
                "warehouse location `{root}` must be an absolute directory, s3://bucket/prefix or gs://bucket/prefix"
            )));
        }
        if root.contains('\'') {
            return Err(SyncError::Config(format!("warehouse location `{root}` contains a quote")));
        }
        Ok(Location(if root.is_empty() { "/".into() } else { root.to_string() }))
    }

    /// The location of a key of the output contract.
    pub fn of(&self, key: &str) -> String {
        format!("{}/{key}", self.0)
    }

    pub(crate) fn is_s3(&self) -> bool {
        self.0.starts_with("s3://")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One file of a kit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitFile {
    pub name: String,
    pub body: String,
}

/// The kit of `engine` for an integration's selected tables and columns, reading `location`.
pub fn kit(engine: Engine, integration: &Integration, location: &Location) -> Result<Vec<KitFile>> {
    let tables = model::kit_tables(integration)?;
    let kit = model::Kit { integration: &integration.name, tables: &tables, location };
    Ok(match engine {
        Engine::DuckDb => duckdb::kit(&kit),
        Engine::BigQuery => bigquery::kit(&kit),
        Engine::Snowflake => snowflake::kit(&kit),
        Engine::Redshift => redshift::kit(&kit),
        Engine::Athena => athena::kit(&kit),
    })
}

/// Where a run writes the kit of `engine`.
pub(crate) fn kit_prefix(integration: &str, engine: Engine) -> String {
    format!("{}warehouse/{engine}/", crate::output::meta_prefix(integration))
}

/// Kit files written at the same time.
const KIT_WRITES_AT_ONCE: usize = 8;

/// Writes every engine's kit into the sink, for the sink's own location (each run does this, so
/// the kits always match the integration's current selection). The kits change only when the
/// selection does, so a fingerprint of them is kept beside them: a run reads it (one request)
/// and rewrites the kits only when it differs.
pub(crate) async fn write_kits(sink: &dyn ObjectSink, integration: &Integration) -> Result<()> {
    let location = Location::new(&sink.locate(""))?;
    let mut files = Vec::new();
    for &engine in Engine::ALL {
        for file in kit(engine, integration, &location)? {
            files.push((format!("{}{}", kit_prefix(&integration.name, engine), file.name), file.body));
        }
    }
    let fingerprint = fingerprint(&files);
    let fingerprint_key = format!("{}warehouse/fingerprint", crate::output::meta_prefix(&integration.name));
    if sink.get(&fingerprint_key).await?.is_some_and(|stored| stored == fingerprint.as_bytes()) {
        return Ok(());
    }
    // Several at a time: on an integration's first sync every table run finds no fingerprint
    // and writes the kits (34 files) before it commits; one by one, that held each commit back.
    let puts = files.into_iter().map(|(key, body)| async move { sink.put(&key, Bytes::from(body)).await });
    let written: Vec<Result<()>> = futures::stream::iter(puts).buffer_unordered(KIT_WRITES_AT_ONCE).collect().await;
    written.into_iter().collect::<Result<()>>()?;
    // Last: a kit half written is written again by the next run.
    sink.put(&fingerprint_key, Bytes::from(fingerprint)).await
}

/// [`write_kits`], by one table run of an integration at a time: on a first sync every table run
/// finds the kits missing at once, and 20 runs each writing the same 34 files held every first
/// invocation back. A run that finds another writing them goes on without (they are the same
/// files; if that writer fails, the next run writes them).
pub(crate) async fn write_kits_once(
    state: &dyn StateStore,
    sink: &dyn ObjectSink,
    integration: &Integration,
) -> Result<()> {
    let holder = format!("{:016x}", rand::random::<u64>());
    if !state.try_lock(&integration.name, KITS_LOCK, &holder, KITS_LOCK_TTL).await? {
        return Ok(());
    }
    let written = write_kits(sink, integration).await;
    if let Err(e) = state.unlock(&integration.name, KITS_LOCK, &holder).await {
        tracing::warn!(event = capsule_core::observe::Event::RunCleanupFailed.as_str(), error = %e, "the kits lock expires by itself");
    }
    written
}

const KITS_LOCK: &str = "warehouse-kits";
const KITS_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// A digest of the kits' keys and contents (stable for a given build, which is all it needs).
fn fingerprint(files: &[(String, String)]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    files.hash(&mut hasher);
    format!("{:016x} {}\n", hasher.finish(), env!("CARGO_PKG_VERSION"))
}

/// A string literal in SQL (single quotes doubled).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
