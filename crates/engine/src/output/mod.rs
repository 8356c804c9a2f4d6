//! The output contract: key layout, streaming NDJSON part files, run manifests, schemas.
//!
//! ```text
//! <integration>/<table>/dt=YYYY-MM-DD/run=<run_id>/part-00000.ndjson.gz
//! _meta/<integration>/runs/<run_id>/<table>.json          (published once the run committed)
//! _meta/<integration>/runs/<run_id>/<table>.pending.json  (until then)
//! _meta/<integration>/runs/<run_id>/<table>.redshift.json (its files as a Redshift COPY manifest)
//! _meta/<integration>/warehouse/<engine>/…               (the warehouse kits, see the warehouse module)
//! ```
//! Keys are relative to the sink's root (a directory, or `s3://bucket/prefix`).

mod part_writer;

pub(crate) use part_writer::PartWriter;
pub use part_writer::WriterOptions;

use capsule_core::Result;
use capsule_core::integration::RunId;
use capsule_core::manifest::{Compression, RunManifest};
use capsule_core::ports::ObjectSink;

/// Removes everything a table run that will not commit wrote: its pending manifest first (so no
/// manifest ever lists a missing file), then its parents list and its data files. A run whose
/// manifest is published committed (loaders may have loaded it, the bookmark has moved past it):
/// nothing of it is ever removed, whatever asks — a duplicate's failure, a takeover, a stranded
/// end. Returns whether anything was removed.
pub(crate) async fn remove_run_outputs(
    sink: &dyn ObjectSink,
    integration: &str,
    table: &str,
    run: &RunId,
) -> Result<bool> {
    if is_published(sink, integration, table, run).await? {
        tracing::warn!(event = capsule_core::observe::Event::PublishedRunKept.as_str(), %integration, %table, run_id = %run,
                       "the run's manifest is published: its files are kept");
        return Ok(false);
    }
    sink.delete(&pending_manifest_key(integration, table, run)).await?;
    sink.delete(&parents_key(integration, table, run)).await?;
    sink.remove_prefix(&run_data_prefix(integration, table, run)).await?;
    Ok(true)
}

/// Whether a run's manifest is published for loaders (the run committed).
pub(crate) async fn is_published(sink: &dyn ObjectSink, integration: &str, table: &str, run: &RunId) -> Result<bool> {
    Ok(sink.get(&manifest_key(integration, table, run)).await?.is_some())
}

/// The folder of every data file of an integration.
pub(crate) fn data_prefix(integration: &str) -> String {
    format!("{integration}/")
}

/// The folder of everything about an integration's data: manifests, logs, warehouse kits.
pub fn meta_prefix(integration: &str) -> String {
    format!("_meta/{integration}/")
}

/// The folder of every run's manifests (what loaders list).
pub(crate) fn manifests_prefix(integration: &str) -> String {
    format!("{}runs/", meta_prefix(integration))
}

/// The folder of one run's manifests, one per table.
pub fn run_manifests_prefix(integration: &str, run: &str) -> String {
    format!("{}{run}/", manifests_prefix(integration))
}

/// The folder of one table run's data files.
pub fn run_data_prefix(integration: &str, table: &str, run: &RunId) -> String {
    format!("{integration}/{table}/dt={}/run={run}/", run.partition_date())
}

/// The key of part `n` of a run.
pub fn part_key(integration: &str, table: &str, run: &RunId, n: u32, compression: Compression) -> String {
    format!("{}part-{n:05}.{}", run_data_prefix(integration, table, run), compression.extension())
}

pub fn manifest_key(integration: &str, table: &str, run: &RunId) -> String {
    format!("{}{table}.json", run_manifests_prefix(integration, run.as_str()))
}

/// Where a run's manifest waits until the run commits: loaders read only [`manifest_key`]s, so
/// they never see a run that has not committed (or never will).
pub fn pending_manifest_key(integration: &str, table: &str, run: &RunId) -> String {
    format!("{}{table}.pending.json", run_manifests_prefix(integration, run.as_str()))
}

/// Beside each published manifest: the same files as a Redshift `COPY … MANIFEST` file.
pub(crate) fn redshift_manifest_key(integration: &str, table: &str, run: &RunId) -> String {
    format!("{}{table}.redshift.json", run_manifests_prefix(integration, run.as_str()))
}

/// Publishes a committed run's manifest from where it waited, its Redshift manifest first;
/// true if there was one to publish (a run that committed, then stopped before publishing: its
/// next run calls this).
pub(crate) async fn publish_pending_manifest(
    sink: &dyn ObjectSink,
    integration: &str,
    table: &str,
    run: &RunId,
) -> Result<Option<RunManifest>> {
    let pending = pending_manifest_key(integration, table, run);
    let Some(body) = sink.get(&pending).await? else { return Ok(None) };
    let manifest: RunManifest = serde_json::from_slice(&body)
        .map_err(|e| capsule_core::SyncError::State(format!("{pending} is not a run manifest: {e}")))?;
    let redshift = capsule_core::manifest::redshift_manifest(&manifest, |key| sink.locate(key));
    sink.put(&redshift_manifest_key(integration, table, run), redshift).await?;
    sink.put(&manifest_key(integration, table, run), body).await?;
    sink.delete(&pending).await?;
    Ok(Some(manifest))
}

/// The parents a fan-out table run discovered (kept for its continuations).
pub fn parents_key(integration: &str, table: &str, run: &RunId) -> String {
    format!("{}{table}.parents.json", run_manifests_prefix(integration, run.as_str()))
}

/// The process log of one invocation of a table run (invocations count from 1).
pub(crate) fn log_key(integration: &str, table: &str, run: &RunId, invocation: u32) -> String {
    format!("{}{table}-{invocation:03}.ndjson", log_prefix(integration, run))
}

pub fn log_prefix(integration: &str, run: &RunId) -> String {
    format!("{}logs/{run}/", meta_prefix(integration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_contract() {
        let run: RunId = "20261128T081100Z-abc123".parse().unwrap();
        assert_eq!(
            part_key("acme", "parties", &run, 3, Compression::Gzip),
            "acme/parties/dt=2026-11-28/run=20261128T081100Z-abc123/part-00003.ndjson.gz"
        );
        assert_eq!(
            part_key("acme", "parties", &run, 0, Compression::None).rsplit('/').next(),
            Some("part-00000.ndjson")
        );
        assert_eq!(manifest_key("acme", "parties", &run), "_meta/acme/runs/20261128T081100Z-abc123/parties.json");
    }
}
