//! Process logs of one table run: every observable thing (start, retries, 429 waits, parents
//! found, parts written, schema drift, the end) as a structured event, kept with the run as
//! NDJSON (`_meta/<integration>/logs/<run_id>/<table>-<invocation>.ndjson`) and emitted to
//! tracing at the same time (CloudWatch gets them as JSON in AWS).

use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::observe::Event;

/// Severity of a run log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    /// As `capsule-sync logs` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    pub at: String,
    pub level: Level,
    /// A stable name: `table_run_started`, `capsule_retry`, …
    pub event: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub fields: Value,
}

/// The log of one table run (cheap to clone; clones share the events).
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    events: Arc<Mutex<Vec<LogEvent>>>,
}

impl RunLog {
    pub fn new() -> RunLog {
        RunLog::default()
    }

    pub fn info(&self, event: Event, message: impl Into<String>, fields: Value) {
        self.push(Level::Info, event, message.into(), fields);
    }

    pub fn warn(&self, event: Event, message: impl Into<String>, fields: Value) {
        self.push(Level::Warn, event, message.into(), fields);
    }

    pub fn error(&self, event: Event, message: impl Into<String>, fields: Value) {
        self.push(Level::Error, event, message.into(), fields);
    }

    fn push(&self, level: Level, event: Event, message: String, fields: Value) {
        let event = event.as_str();
        match level {
            Level::Info => tracing::info!(event, %fields, "{message}"),
            Level::Warn => tracing::warn!(event, %fields, "{message}"),
            Level::Error => tracing::error!(event, %fields, "{message}"),
        }
        let at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        self.events.lock().unwrap().push(LogEvent { at, level, event: event.to_string(), message, fields });
    }

    pub fn events(&self) -> Vec<LogEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The events as NDJSON.
    pub fn to_ndjson(&self) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|line| line + "\n")
            .collect()
    }
}

/// Parses stored NDJSON logs; a bad line is reported, not fatal.
pub fn parse_ndjson(text: &str) -> Vec<Result<LogEvent, String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("unreadable log line ({e}): {l}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_as_ndjson() {
        let log = RunLog::new();
        log.info(Event::TableRunStarted, "started", json!({"table": "parties"}));
        log.warn(Event::CapsuleRetry, "retrying", Value::Null);
        let text = log.to_ndjson();
        assert_eq!(text.lines().count(), 2);
        let parsed: Vec<LogEvent> = parse_ndjson(&text).into_iter().map(Result::unwrap).collect();
        assert_eq!(parsed, log.events());
        assert_eq!(parsed[1].level, Level::Warn);
        assert!(parse_ndjson("{nope}\n")[0].is_err());
    }
}
