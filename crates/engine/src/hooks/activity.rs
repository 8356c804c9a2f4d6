//! What `status` and `jobs` show of REST hooks: the hook runs published over a period — how
//! many deliveries and rows, and when the last delivery came — read from their manifests.
//! Run ids start with their date, so only the days in the period are listed.

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;

use capsule_core::Result;
use capsule_core::integration::RunId;
use capsule_core::manifest::RunManifest;
use capsule_core::ports::ObjectSink;

use crate::output;

/// Hook runs of one integration since an instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookActivity {
    pub runs: u64,
    pub deliveries: u64,
    pub rows: u64,
    pub last_received_at: Option<DateTime<Utc>>,
}

/// Manifests read at the same time.
const READS_AT_ONCE: usize = 16;

/// The hook runs of `integration` whose last delivery came at or after `since`.
pub async fn activity(sink: &dyn ObjectSink, integration: &str, since: DateTime<Utc>) -> Result<HookActivity> {
    let mut keys = Vec::new();
    let mut day = since.date_naive();
    while day <= Utc::now().date_naive() {
        let prefix = format!("{}{}", output::manifests_prefix(integration), day.format("%Y%m%d"));
        keys.extend(sink.list(&prefix).await?.into_iter().filter(|k| is_hook_manifest(k)));
        day += Duration::days(1);
    }
    let reads = keys.into_iter().map(|key| async move { sink.get(&key).await });
    let bodies: Vec<Result<Option<bytes::Bytes>>> =
        futures::stream::iter(reads).buffer_unordered(READS_AT_ONCE).collect().await;
    let mut activity = HookActivity::default();
    for body in bodies {
        let Some(body) = body? else { continue };
        let Ok(manifest) = serde_json::from_slice::<RunManifest>(&body) else { continue };
        let Some(hooks) = manifest.hooks.filter(|h| h.last_received_at >= since) else { continue };
        activity.runs += 1;
        activity.deliveries += hooks.deliveries;
        activity.rows += manifest.rows;
        activity.last_received_at = activity.last_received_at.max(Some(hooks.last_received_at));
    }
    Ok(activity)
}

/// `…/runs/<hook run id>/<table>.json`.
fn is_hook_manifest(key: &str) -> bool {
    let mut parts = key.rsplit('/');
    let (Some(file), Some(run)) = (parts.next(), parts.next()) else { return false };
    let table = file.strip_suffix(".json").unwrap_or("");
    !table.is_empty() && !table.contains('.') && run.parse::<RunId>().is_ok_and(|r| r.is_hook())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_published_hook_manifests_count() {
        let hook = "_meta/a/runs/20261208T010203Z-hook0a1b2c/parties.json";
        assert!(super::is_hook_manifest(hook));
        assert!(!super::is_hook_manifest("_meta/a/runs/20261208T010203Z-0a1b2c/parties.json"));
        assert!(!super::is_hook_manifest("_meta/a/runs/20261208T010203Z-hook0a1b2c/parties.redshift.json"));
    }
}
