//! The events the Lambda functions take. Both are plain JSON; a malformed one is rejected with
//! an error that names the field.

use serde::{Deserialize, Serialize};

use crate::catalog::TableName;
use crate::integration::{IntegrationName, RunId};
use crate::{Result, SyncError};

/// What the orchestrator accepts: an EventBridge scheduled event, or a manual request such as
/// `{"integration": "acme", "tables": ["parties"], "force": true}`.
#[derive(Debug, Clone, PartialEq)]
pub enum OrchestratorEvent {
    /// The schedule fired: sync every integration that is due.
    Scheduled,
    Manual(ManualRun),
}

/// A hand-started run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualRun {
    /// One integration; all of them when absent.
    #[serde(default)]
    pub integration: Option<IntegrationName>,
    /// Only these tables; the integration's tables when absent or empty.
    #[serde(default)]
    pub tables: Vec<TableName>,
    /// Run even if not due yet (pause still wins).
    #[serde(default)]
    pub force: bool,
    /// A run of every table counts as the integration's last run for the schedule; with this,
    /// it does not (the next tick runs it when it was due anyway).
    #[serde(default)]
    pub no_schedule: bool,
}

impl OrchestratorEvent {
    pub fn parse(value: serde_json::Value) -> Result<OrchestratorEvent> {
        let is_schedule = value.get("source").and_then(|s| s.as_str()) == Some("aws.events")
            || value.get("detail-type").and_then(|s| s.as_str()) == Some("Scheduled Event");
        if is_schedule {
            return Ok(OrchestratorEvent::Scheduled);
        }
        if !value.is_object() {
            return Err(SyncError::Config(format!(
                "orchestrator event must be a JSON object (a scheduled event or {{\"integration\": …, \"tables\": […], \"force\": true}}), got {value}"
            )));
        }
        serde_json::from_value(value)
            .map(OrchestratorEvent::Manual)
            .map_err(|e| SyncError::Config(format!("invalid orchestrator event: {e}")))
    }
}

/// The event of one table-sync invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSyncEvent {
    pub integration: IntegrationName,
    pub table: TableName,
    pub run_id: RunId,
    /// Set when a run re-invokes itself to continue from its checkpoint.
    #[serde(default)]
    pub continuation: bool,
    /// Cap on this invocation's working time in seconds (besides Lambda's own deadline).
    #[serde(default)]
    pub max_seconds: Option<u64>,
    /// A continuation's invocation number (2, 3, …): it runs only if the run's checkpoint waits
    /// for exactly this invocation, so a duplicate or late event is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    /// The invocation that stopped renewing its lease (killed, timed out): recorded failed
    /// before this continuation resumes the run (`seq`) or, with no `seq`, ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stranded: Option<u32>,
}

impl TableSyncEvent {
    pub fn parse(value: serde_json::Value) -> Result<TableSyncEvent> {
        serde_json::from_value(value).map_err(|e| SyncError::Config(format!("invalid table-sync event: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn orchestrator_events_parse_and_bad_ones_say_why() {
        let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert_eq!(OrchestratorEvent::parse(scheduled).unwrap(), OrchestratorEvent::Scheduled);
        let manual = OrchestratorEvent::parse(json!({"integration": "acme", "tables": ["parties"], "force": true}));
        assert_eq!(
            manual.unwrap(),
            OrchestratorEvent::Manual(ManualRun {
                integration: Some("acme".parse().unwrap()),
                tables: vec!["parties".parse().unwrap()],
                force: true,
                no_schedule: false
            })
        );
        assert_eq!(OrchestratorEvent::parse(json!({})).unwrap(), OrchestratorEvent::Manual(ManualRun::default()));
        let err = OrchestratorEvent::parse(json!({"integration": "acme", "tabels": []})).unwrap_err().to_string();
        assert!(err.contains("tabels"), "{err}");
        assert!(OrchestratorEvent::parse(json!({"tables": "parties"})).unwrap_err().to_string().contains("sequence"));
        assert!(OrchestratorEvent::parse(json!("go")).is_err());
    }

    #[test]
    fn the_sample_events_in_infra_parse() {
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let scheduled = parse(include_str!("../../../infra/events/scheduled.json"));
        assert_eq!(OrchestratorEvent::parse(scheduled).unwrap(), OrchestratorEvent::Scheduled);
        let manual = parse(include_str!("../../../infra/events/manual.json"));
        assert!(matches!(OrchestratorEvent::parse(manual).unwrap(), OrchestratorEvent::Manual(m) if m.force));
        let table_sync = parse(include_str!("../../../infra/events/table-sync.json"));
        assert_eq!(TableSyncEvent::parse(table_sync).unwrap().table, "parties");
    }

    #[test]
    fn table_sync_events_need_their_fields() {
        let ok = json!({"integration": "acme", "table": "parties", "run_id": "20261128T081100Z-abc123"});
        assert!(!TableSyncEvent::parse(ok).unwrap().continuation);
        let err = TableSyncEvent::parse(json!({"integration": "acme", "table": "parties"})).unwrap_err().to_string();
        assert!(err.contains("run_id"), "{err}");
        let err = TableSyncEvent::parse(json!({"integration": "a", "table": "parties", "run_id": "bad"})).unwrap_err();
        assert!(err.to_string().contains("run id"), "{err}");
        let bad = json!({"integration": "Acme Corp", "table": "parties", "run_id": "20261128T081100Z-abc123"});
        let err = TableSyncEvent::parse(bad).unwrap_err().to_string();
        assert!(err.contains("integration name `Acme Corp` is invalid"), "{err}");
        assert_eq!(err.matches("invalid configuration").count(), 1, "said once: {err}");
    }
}
