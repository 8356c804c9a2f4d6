//! Turning an API record into an output row: the selected columns (coerced to their catalog
//! type where Capsule is loose), the listing's constants, parent columns and metadata columns.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

use crate::catalog::{Column, ColumnType, Constant, ConstantValue, Filter, METADATA_COLUMNS, TableSpec};

/// Builds rows of one table run and notes fields the catalog doesn't know.
pub struct RowBuilder {
    columns: Vec<&'static Column>,
    known: HashSet<&'static str>,
    run_id: Value,
    extracted_at: Value,
    pub unknown_fields: BTreeSet<String>,
}

impl RowBuilder {
    pub fn new(table: &TableSpec, columns: Vec<&'static Column>, run_id: &str, extracted_at: &str) -> RowBuilder {
        RowBuilder {
            columns,
            known: table.all_columns().map(|c| c.name).collect(),
            run_id: Value::String(run_id.to_string()),
            extracted_at: Value::String(extracted_at.to_string()),
            unknown_fields: BTreeSet::new(),
        }
    }

    /// The output row for `record`. `watch_unknown` is off for arrays whose extra fields are
    /// expected noise (the deleted feeds' restricted records).
    pub fn build(
        &mut self,
        mut record: Map<String, Value>,
        constants: &[Constant],
        parent: &[(&'static str, Value)],
        watch_unknown: bool,
    ) -> Value {
        let mut row = Map::with_capacity(self.columns.len() + parent.len() + constants.len() + METADATA_COLUMNS.len());
        for column in &self.columns {
            let value = record.remove(column.name).map_or(Value::Null, |v| coerce(v, column.ty));
            row.insert(column.name.to_string(), value);
        }
        if watch_unknown {
            for key in record.keys() {
                if !self.known.contains(key.as_str()) && !self.unknown_fields.contains(key) {
                    self.unknown_fields.insert(key.clone());
                }
            }
        }
        for c in constants {
            let value = match c.value {
                ConstantValue::Bool(b) => Value::Bool(b),
                ConstantValue::Str(s) => Value::String(s.to_string()),
            };
            row.insert(c.column.to_string(), value);
        }
        for (column, value) in parent {
            row.insert((*column).to_string(), value.clone());
        }
        row.insert("_run_id".into(), self.run_id.clone());
        row.insert("_extracted_at".into(), self.extracted_at.clone());
        Value::Object(row)
    }
}

/// Where Capsule's documented types are loose, bring values to the column's type:
/// numbers sent as strings become numbers; a timestamp in a date column keeps its date part.
pub fn coerce(value: Value, ty: ColumnType) -> Value {
    match (ty, &value) {
        (ColumnType::Numeric, Value::String(s)) => {
            if let Ok(i) = s.trim().parse::<i64>() {
                Value::from(i)
            } else if let Some(n) = s.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Value::Number(n)
            } else {
                value
            }
        }
        (ColumnType::Date, Value::String(s)) if s.len() > 10 && s.as_bytes()[10] == b'T' => {
            Value::String(s[..10].to_string())
        }
        (ColumnType::Boolean, Value::String(s)) if s == "true" || s == "false" => Value::Bool(s == "true"),
        _ => value,
    }
}

/// The value at a dotted path (`opportunity.id`).
pub fn get_path<'v>(record: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut current = record.get(parts.next()?)?;
    for part in parts {
        current = current.get(part)?;
    }
    Some(current)
}

pub fn matches_all(record: &Map<String, Value>, filters: &[Filter]) -> bool {
    filters.iter().all(|f| match *f {
        Filter::Equals(field, expected) => get_path(record, field).and_then(Value::as_str) == Some(expected),
        Filter::IsObject(field) => get_path(record, field).is_some_and(Value::is_object),
        Filter::IsTrue(field) => get_path(record, field) == Some(&Value::Bool(true)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coercion_fixes_only_what_capsule_is_loose_about() {
        assert_eq!(coerce(json!("42"), ColumnType::Numeric), json!(42));
        assert_eq!(coerce(json!("4.5"), ColumnType::Numeric), json!(4.5));
        assert_eq!(coerce(json!("n/a"), ColumnType::Numeric), json!("n/a"));
        assert_eq!(coerce(json!("2015-10-31T00:00:00Z"), ColumnType::Date), json!("2015-10-31"));
        assert_eq!(coerce(json!("2015-10-31"), ColumnType::Date), json!("2015-10-31"));
        assert_eq!(coerce(json!("true"), ColumnType::Boolean), json!(true));
        assert_eq!(coerce(json!("2015-09-15T10:43:23Z"), ColumnType::Timestamp), json!("2015-09-15T10:43:23Z"));
    }

    #[test]
    fn rows_carry_selected_columns_constants_and_metadata_and_note_unknown_fields() {
        let table = crate::catalog::table("custom_fields").unwrap();
        let columns = vec![&table.columns[0], &table.columns[1]];
        let mut b = RowBuilder::new(table, columns, "run-1", "2026-01-01T00:00:00Z");
        let record = json!({"id": 7, "name": "Lead Score", "type": "number", "brandNew": 1});
        let constants = [Constant { column: "entity", value: ConstantValue::Str("kases") }];
        let row = b.build(record.as_object().unwrap().clone(), &constants, &[], true);
        assert_eq!(
            row,
            json!({"id": 7, "name": "Lead Score", "entity": "kases", "_run_id": "run-1",
                   "_extracted_at": "2026-01-01T00:00:00Z"})
        );
        assert_eq!(b.unknown_fields.iter().collect::<Vec<_>>(), vec!["brandNew"]);
    }

    #[test]
    fn filters_and_paths() {
        let r = json!({"type": "person", "organisation": {"id": 5}, "hasTrack": true, "kase": null});
        let r = r.as_object().unwrap();
        assert_eq!(get_path(r, "organisation.id"), Some(&json!(5)));
        assert_eq!(get_path(r, "kase.id"), None);
        assert!(matches_all(r, &[Filter::Equals("type", "person"), Filter::IsObject("organisation")]));
        assert!(matches_all(r, &[Filter::IsTrue("hasTrack")]));
        assert!(!matches_all(r, &[Filter::IsObject("kase")]));
    }
}
