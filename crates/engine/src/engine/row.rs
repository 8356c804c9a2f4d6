//! Turning an API record into an output row: the selected columns (brought to their catalog
//! type, so the files are what the warehouse DDL declares), the listing's constants, parent
//! columns and metadata columns.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat};
use serde_json::Value;
use serde_json::value::RawValue;

use capsule_client::RawRecord;
use capsule_core::catalog::{Column, ColumnType, Constant, ConstantValue, Filter, METADATA_COLUMNS, TableSpec};

/// Builds rows of one table run and notes fields the catalog doesn't know.
///
/// A row is written straight to JSON text, column by column, rather than assembled as a map and
/// then serialised: this is the connector's hot path, and a map per row (hashing every key,
/// growing, freeing) cost more than the writing itself. Values are copied from the record's raw
/// text where it already is what the column holds ([`write_value`]).
pub(crate) struct RowBuilder {
    columns: Vec<&'static Column>,
    /// Every column name of the table, sorted (searched for each field of each record).
    known: Vec<&'static str>,
    /// `"_run_id":"…","_extracted_at":"…"`, the same on every row.
    metadata: Vec<u8>,
    /// The row being written (reused: one allocation per run, not per row).
    line: Vec<u8>,
    pub unknown_fields: BTreeSet<String>,
    /// Columns that received a value not of their type (written as null, or as JSON text in a
    /// text column): reported in the manifest and the run log.
    pub type_mismatches: BTreeSet<String>,
}

impl RowBuilder {
    pub fn new(table: &TableSpec, columns: Vec<&'static Column>, run_id: &str, extracted_at: &str) -> RowBuilder {
        let mut metadata = Vec::new();
        let values = [Value::from(run_id), Value::from(extracted_at)];
        for (column, value) in METADATA_COLUMNS.iter().zip(values.iter()) {
            write_field(&mut metadata, column.name, value);
        }
        let mut known: Vec<&'static str> = table.all_columns().map(|c| c.name).collect();
        known.sort_unstable();
        RowBuilder {
            columns,
            known,
            metadata,
            line: Vec::new(),
            unknown_fields: BTreeSet::new(),
            type_mismatches: BTreeSet::new(),
        }
    }

    /// The output row for `record` as one JSON object (no newline): the selected columns, the
    /// listing's constants, the parent columns, then the metadata. `watch_unknown` is off for
    /// arrays whose extra fields are expected noise (the deleted feeds' restricted records).
    pub fn write(
        &mut self,
        record: &RawRecord<'_>,
        constants: &[Constant],
        parent: &[(&'static str, Value)],
        watch_unknown: bool,
    ) -> &[u8] {
        let out = &mut self.line;
        out.clear();
        out.push(b'{');
        for column in &self.columns {
            write_key(out, column.name);
            let fits = match record.get(column.name) {
                None => {
                    out.extend_from_slice(b"null");
                    true
                }
                Some(raw) => write_value(out, raw, column.ty),
            };
            if !fits && !self.type_mismatches.contains(column.name) {
                self.type_mismatches.insert(column.name.to_string());
            }
        }
        if watch_unknown {
            for key in record.keys() {
                if self.known.binary_search(&key).is_err() && !self.unknown_fields.contains(key) {
                    self.unknown_fields.insert(key.to_string());
                }
            }
        }
        for c in constants {
            let value = match c.value {
                ConstantValue::Bool(b) => Value::Bool(b),
                ConstantValue::Str(s) => Value::String(s.to_string()),
            };
            write_field(out, c.column, &value);
        }
        for (column, value) in parent {
            write_field(out, column, value);
        }
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(&self.metadata);
        out.push(b'}');
        &self.line
    }

    /// The output row for the record `text`, as a value.
    #[cfg(test)]
    pub(crate) fn build(
        &mut self,
        text: &str,
        constants: &[Constant],
        parent: &[(&'static str, Value)],
        watch_unknown: bool,
    ) -> Value {
        let record = RawRecord::parse(text).expect("a JSON object");
        serde_json::from_slice(self.write(&record, constants, parent, watch_unknown)).expect("a written row is JSON")
    }
}

/// `"name":`, after a comma unless it opens the object (or the buffer).
fn write_key(out: &mut Vec<u8>, name: &str) {
    if !matches!(out.last(), None | Some(b'{')) {
        out.push(b',');
    }
    // Writing JSON into memory cannot fail: keys are strings.
    serde_json::to_writer(&mut *out, name).expect("JSON into memory");
    out.push(b':');
}

/// `"name":value`, after a comma unless it opens the object (or the buffer).
fn write_field(out: &mut Vec<u8>, name: &str, value: &Value) {
    write_key(out, name);
    serde_json::to_writer(&mut *out, value).expect("JSON into memory");
}

/// Writes a raw value brought to its column's type ([`coerce`]'s rules); false if it was a
/// mismatch. Where the text already is what [`coerce`] would write (text, integers, booleans,
/// UTC timestamps, dates, records on one line) it is copied as it came; anything else is parsed
/// and coerced. A test checks both ways give the same bytes.
pub(crate) fn write_value(out: &mut Vec<u8>, raw: &RawValue, ty: ColumnType) -> bool {
    let text = raw.get();
    let as_is = match (ty, text.as_bytes()[0]) {
        (_, b'n') => true,
        // A record on several lines would break the NDJSON line: those are parsed and rewritten.
        (ColumnType::Record, _) => !text.contains(['\n', '\r']),
        (ColumnType::String, b'"') => true,
        // (`-0` is read back as a float: coerced, it is written `0`.)
        (ColumnType::Integer, b'-' | b'0'..=b'9') => text.len() < 19 && text != "-0" && text.parse::<i64>().is_ok(),
        (ColumnType::Boolean, b't' | b'f') => true,
        (ColumnType::Timestamp, b'"') => is_utc_timestamp(text),
        (ColumnType::Date, b'"') => text.len() == 12 && NaiveDate::parse_from_str(&text[1..11], "%Y-%m-%d").is_ok(),
        _ => false,
    };
    if as_is {
        out.extend_from_slice(text.as_bytes());
        return true;
    }
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let (fits, value) = match coerce(value, ty) {
        Coerced::Fits(v) => (true, v),
        Coerced::Mismatch(v) => (false, v),
    };
    serde_json::to_writer(&mut *out, &value).expect("JSON into memory");
    fits
}

/// `"2015-09-15T10:43:23Z"`: a timestamp in UTC to the second, as [`coerce`] writes it (RFC 3339
/// also allows `t`, `z` and a space, which [`coerce`] rewrites).
fn is_utc_timestamp(quoted: &str) -> bool {
    let bytes = quoted.as_bytes();
    quoted.len() == 22 && bytes[11] == b'T' && bytes[20] == b'Z' && DateTime::parse_from_rfc3339(&quoted[1..21]).is_ok()
}

/// A value brought to its column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Coerced {
    /// Of the column's type (possibly after a lossless conversion Capsule makes necessary).
    Fits(Value),
    /// Not of the column's type: what is written instead (null, or JSON text in a text column).
    Mismatch(Value),
}

/// Brings a value to its column's type, so the files hold what the DDL declares:
/// - integers: JSON integers; integers Capsule sends as strings (`"42"`) are converted;
/// - timestamps: RFC 3339 in UTC (`2015-09-15T10:43:23Z`); an offset is converted to UTC, a date
///   alone is midnight UTC;
/// - dates: `YYYY-MM-DD`; a timestamp in a date column keeps the date it was sent with;
/// - booleans: JSON booleans (`"true"`/`"false"` converted);
/// - text: numbers and booleans become their text; an object or array becomes its JSON text
///   (a mismatch: Capsule changed the field's shape);
/// - records: any JSON value, as is.
///
/// Null fits every type. Any other value is a mismatch and is written as null.
pub fn coerce(value: Value, ty: ColumnType) -> Coerced {
    if value.is_null() || ty == ColumnType::Record {
        return Coerced::Fits(value);
    }
    let converted = match (ty, &value) {
        (ColumnType::Integer, Value::Number(n)) => integer(&n.to_string()),
        (ColumnType::Integer, Value::String(s)) => integer(s),
        (ColumnType::Timestamp, Value::String(s)) => timestamp(s),
        (ColumnType::Date, Value::String(s)) => date(s),
        (ColumnType::Boolean, Value::Bool(_)) => Some(value.clone()),
        (ColumnType::Boolean, Value::String(s)) => match s.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        (ColumnType::String, Value::String(_)) => Some(value.clone()),
        (ColumnType::String, Value::Number(_) | Value::Bool(_)) => Some(Value::String(value.to_string())),
        (ColumnType::String, Value::Array(_) | Value::Object(_)) => {
            return Coerced::Mismatch(Value::String(value.to_string()));
        }
        _ => None,
    };
    match converted {
        Some(v) => Coerced::Fits(v),
        None => Coerced::Mismatch(Value::Null),
    }
}

/// An integer from its text (`42`, `"42"`, `42.0`); None if it has a fraction or is not one.
fn integer(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    let f = text.parse::<f64>().ok()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then(|| Value::from(f as i64))
}

fn timestamp(text: &str) -> Option<Value> {
    let text = text.trim();
    let utc = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.to_utc(),
        Err(_) => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?.and_time(NaiveTime::MIN).and_utc(),
    };
    Some(Value::String(utc.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
}

fn date(text: &str) -> Option<Value> {
    let day = text.trim().get(..10)?;
    let rest = &text.trim()[10..];
    let ok = NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok() && (rest.is_empty() || rest.starts_with('T'));
    ok.then(|| Value::String(day.to_string()))
}

pub(crate) fn matches_all(record: &RawRecord<'_>, filters: &[Filter]) -> bool {
    filters.iter().all(|f| match *f {
        // Top-level fields (all the catalog's filters) are read from their text.
        Filter::Equals(field, expected) if !field.contains('.') => record.str(field).as_deref() == Some(expected),
        Filter::IsObject(field) if !field.contains('.') => record.get(field).is_some_and(|v| v.get().starts_with('{')),
        Filter::IsTrue(field) if !field.contains('.') => record.get(field).is_some_and(|v| v.get() == "true"),
        Filter::Equals(field, expected) => record.value(field).as_ref().and_then(Value::as_str) == Some(expected),
        Filter::IsObject(field) => record.value(field).is_some_and(|v| v.is_object()),
        Filter::IsTrue(field) => record.value(field) == Some(Value::Bool(true)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_brought_to_their_column_type_and_the_rest_is_a_mismatch() {
        use ColumnType::*;
        let fits = |v: Value, ty| match coerce(v.clone(), ty) {
            Coerced::Fits(out) => out,
            Coerced::Mismatch(_) => panic!("{v} should fit {ty:?}"),
        };
        let mismatch = |v: Value, ty| match coerce(v.clone(), ty) {
            Coerced::Mismatch(out) => out,
            Coerced::Fits(_) => panic!("{v} should not fit {ty:?}"),
        };
        assert_eq!(fits(json!("42"), Integer), json!(42));
        assert_eq!(fits(json!(42.0), Integer), json!(42));
        assert_eq!(fits(json!(-7), Integer), json!(-7));
        assert_eq!(mismatch(json!("4.5"), Integer), Value::Null);
        assert_eq!(mismatch(json!("n/a"), Integer), Value::Null);
        assert_eq!(fits(json!("2015-10-31T00:00:00Z"), Date), json!("2015-10-31"));
        assert_eq!(fits(json!("2015-10-31"), Date), json!("2015-10-31"));
        assert_eq!(mismatch(json!("31/10/2015"), Date), Value::Null);
        assert_eq!(fits(json!("true"), Boolean), json!(true));
        assert_eq!(mismatch(json!("yes"), Boolean), Value::Null);
        assert_eq!(fits(json!("2015-09-15T10:43:23Z"), Timestamp), json!("2015-09-15T10:43:23Z"));
        assert_eq!(fits(json!("2015-09-15T12:43:23.5+02:00"), Timestamp), json!("2015-09-15T10:43:23.500Z"));
        assert_eq!(fits(json!("2015-09-15"), Timestamp), json!("2015-09-15T00:00:00Z"));
        assert_eq!(mismatch(json!("yesterday"), Timestamp), Value::Null);
        assert_eq!(fits(json!(12), String), json!("12"));
        assert_eq!(mismatch(json!({"a": 1}), String), json!("{\"a\":1}"));
        assert_eq!(fits(json!({"id": 1}), Record), json!({"id": 1}));
        assert_eq!(fits(Value::Null, Integer), Value::Null);
    }

    #[test]
    fn a_mismatch_is_written_as_null_and_named() {
        let table = capsule_core::catalog::table("countries").unwrap();
        let mut b = RowBuilder::new(table, table.columns.iter().collect(), "run-1", "2026-01-01T00:00:00Z");
        let record = json!({"alpha2Code": "AF", "alpha3Code": "AFG", "numericCode": "four", "name": "Afghanistan"});
        let row = b.build(&record.to_string(), &[], &[], true);
        assert_eq!(row["numericCode"], Value::Null);
        assert_eq!(b.type_mismatches.iter().collect::<Vec<_>>(), vec!["numericCode"]);
    }

    #[test]
    fn rows_carry_selected_columns_constants_and_metadata_and_note_unknown_fields() {
        let table = capsule_core::catalog::table("custom_fields").unwrap();
        let columns = vec![&table.columns[0], &table.columns[1]];
        let mut b = RowBuilder::new(table, columns, "run-1", "2026-01-01T00:00:00Z");
        let record = json!({"id": 7, "name": "Lead Score", "type": "number", "brandNew": 1});
        let constants = [Constant { column: "entity", value: ConstantValue::Str("kases") }];
        let row = b.build(&record.to_string(), &constants, &[], true);
        assert_eq!(
            row,
            json!({"id": 7, "name": "Lead Score", "entity": "kases", "_run_id": "run-1",
                   "_extracted_at": "2026-01-01T00:00:00Z"})
        );
        assert_eq!(b.unknown_fields.iter().collect::<Vec<_>>(), vec!["brandNew"]);
    }

    #[test]
    fn a_row_is_written_as_one_json_object_in_column_order() {
        let table = capsule_core::catalog::table("tag_definitions").unwrap();
        let mut b = RowBuilder::new(table, table.columns.iter().collect(), "r\"1", "2026-01-01T00:00:00Z");
        let record = json!({"name": "VIP", "id": "7", "dataTag": false, "description": null});
        let constants = [Constant { column: "entity", value: ConstantValue::Str("parties") }];
        let text = record.to_string();
        let line = b.write(&RawRecord::parse(&text).unwrap(), &constants, &[], true);
        assert_eq!(
            std::str::from_utf8(line).unwrap(),
            r#"{"id":7,"name":"VIP","description":null,"dataTag":false,"entity":"parties","_run_id":"r\"1","_extracted_at":"2026-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn filters_and_paths() {
        let text = json!({"type": "person", "organisation": {"id": 5}, "hasTrack": true, "kase": null}).to_string();
        let r = RawRecord::parse(&text).unwrap();
        assert_eq!(r.value("organisation.id"), Some(json!(5)));
        assert_eq!(r.value("kase.id"), None);
        assert!(matches_all(&r, &[Filter::Equals("type", "person"), Filter::IsObject("organisation")]));
        assert!(matches_all(&r, &[Filter::IsTrue("hasTrack")]));
        assert!(!matches_all(&r, &[Filter::IsObject("kase")]));
        assert!(!matches_all(&r, &[Filter::Equals("organisation.id", "5")]), "a number is not the text");
    }

    /// Copying a value's text as it came and parsing and coercing it write the same bytes.
    #[test]
    fn values_copied_as_they_came_are_what_coercing_them_writes() {
        use ColumnType::*;
        let values = [
            "null",
            "42",
            "-7",
            "4.0",
            "4.5",
            "12345678901234567890",
            "\"42\"",
            "true",
            "false",
            "\"true\"",
            "\"Ann \\\"A\\\" \\u00e9\"",
            "\"2015-09-15T10:43:23Z\"",
            "\"2015-09-15T12:43:23.5+02:00\"",
            "\"2015-09-15\"",
            "\"2015-13-45\"",
            "\"2015-09-15T25:00:00Z\"",
            "\"2015-09-15 10:43:23Z\"",
            "\"2015-09-15t10:43:23z\"",
            "\"2015-09-15T10:43:23+00:00\"",
            "-0",
            "1e3",
            "{\"id\":1,\"name\":\"x\"}",
            "[1,{\"a\":[]}]",
            "{\n  \"id\" : 1\n}",
            "[ 1, 2 ]",
            "\"\"",
        ];
        for ty in [Integer, String, Record, Timestamp, Date, Boolean] {
            for text in values {
                let raw: &RawValue = serde_json::from_str(text).unwrap();
                let mut out = Vec::new();
                let fits = write_value(&mut out, raw, ty);
                let (want_fits, want) = match coerce(serde_json::from_str(text).unwrap(), ty) {
                    Coerced::Fits(v) => (true, v),
                    Coerced::Mismatch(v) => (false, v),
                };
                let written: Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{ty:?} {text}: {e}"));
                assert_eq!((fits, &written), (want_fits, &want), "{ty:?} {text}");
                assert!(!out.contains(&b'\n'), "{ty:?} {text}: one line");
                // Escapes (`\u00e9`) and a record's spacing are kept as they came.
                if ty != Record && !text.contains('\\') {
                    assert_eq!(out, serde_json::to_vec(&want).unwrap(), "{ty:?} {text}: the same bytes");
                }
            }
        }
    }
}
