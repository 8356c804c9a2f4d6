//! One REST hook delivery as Capsule sends it — `{"event": "party/updated", "payload":
//! [record, …]}`, one record or (a `batched` hook) several — checked and kept as text until it
//! is landed. What a deletion's payload holds is UNCONFIRMED: only an `id` is required of any
//! record, and a deletion keeps whatever else came.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use capsule_core::catalog::{self, HookEvent};

use super::receiver::Rejection;

/// A checked delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: HookEvent,
    /// Each record's JSON text (an object with an integer `id`).
    pub records: Vec<Box<RawValue>>,
    pub received_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Body {
    event: String,
    payload: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Keyed {
    #[serde(rename = "id")]
    _id: i64,
}

impl Delivery {
    /// Reads a delivery's body: a known event and records that each have an integer `id`.
    pub fn parse(body: &[u8], received_at: DateTime<Utc>) -> Result<Delivery, Rejection> {
        let body: Body = serde_json::from_slice(body).map_err(|e| {
            Rejection::Malformed(format!("the body is not {{\"event\": …, \"payload\": [record, …]}}: {e}"))
        })?;
        let event = catalog::hook_event(&body.event)
            .ok_or_else(|| Rejection::Malformed(format!("`{}` is not an event Capsule sends", body.event)))?;
        if body.payload.is_empty() {
            return Err(Rejection::Malformed("the payload holds no record".into()));
        }
        for (i, record) in body.payload.iter().enumerate() {
            serde_json::from_str::<Keyed>(record.get()).map_err(|e| {
                Rejection::Malformed(format!("payload record {i} is not an object with an integer id: {e}"))
            })?;
        }
        Ok(Delivery { event, records: body.payload, received_at })
    }

    /// The body size in bytes of its records (what a roll counts).
    pub fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.get().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_names_a_known_event_and_keyed_records() {
        let now = Utc::now();
        let ok = Delivery::parse(br#"{"event":"party/deleted","payload":[{"id":7},{"id":8}]}"#, now).unwrap();
        assert!(ok.event.deletion);
        assert_eq!(ok.event.table.name, "parties");
        assert_eq!(ok.records.len(), 2);
        for (body, says) in [
            (&br#"{"event":"party/exploded","payload":[{"id":1}]}"#[..], "not an event Capsule sends"),
            (br#"{"event":"party/updated","payload":[]}"#, "no record"),
            (br#"{"event":"party/updated","payload":[{"name":"x"}]}"#, "record 0"),
            (br#"{"event":"party/updated","payload":[{"id":"7"}]}"#, "integer id"),
            (br#"not json"#, "is not {"),
        ] {
            let err = Delivery::parse(body, now).unwrap_err();
            assert!(matches!(err, Rejection::Malformed(_)), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
