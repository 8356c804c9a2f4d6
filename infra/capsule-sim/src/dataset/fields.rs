//! A made record's top-level fields, in the order they are written, without a hash map.
//!
//! A generated record is made again on every read. Made as a `serde_json::Value`, a third of
//! that went into hashing its ~30 keys into the map's index and growing it; a list of
//! `(key, value)` pairs costs neither, and a record is written (or has a field looked up) a
//! handful of times. Nested values stay `Value`s: they are small.

use std::ops::{Index, IndexMut};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// `json!` for a record's top level: `fields!({"id": id, "name": name})` makes [`Fields`],
/// each value written as `json!` takes it.
macro_rules! fields {
    ({ $($body:tt)* }) => {{
        let mut fields = $crate::dataset::fields::Fields::with_capacity(32);
        $crate::dataset::fields::fields!(@entry fields ($($body)*));
        fields
    }};
    (@entry $fields:ident ()) => {};
    (@entry $fields:ident ($key:literal : $($rest:tt)*)) => {
        $crate::dataset::fields::fields!(@value $fields $key () ($($rest)*))
    };
    (@value $fields:ident $key:literal ($($value:tt)*) (, $($rest:tt)*)) => {
        $fields.push($key, serde_json::json!($($value)*));
        $crate::dataset::fields::fields!(@entry $fields ($($rest)*))
    };
    (@value $fields:ident $key:literal ($($value:tt)*) ()) => {
        $fields.push($key, serde_json::json!($($value)*));
    };
    (@value $fields:ident $key:literal ($($value:tt)*) ($next:tt $($rest:tt)*)) => {
        $crate::dataset::fields::fields!(@value $fields $key ($($value)* $next) ($($rest)*))
    };
}
pub(crate) use fields;

/// What `fields[key]` gives for a key the record does not have, as `Value` indexing does.
static NULL: Value = Value::Null;

/// A record's top-level fields in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    pub fn with_capacity(capacity: usize) -> Fields {
        Fields(Vec::with_capacity(capacity))
    }

    /// Adds a field after the others (no check for an existing one: see `IndexMut` for that).
    pub fn push(&mut self, key: &'static str, value: Value) {
        self.0.push((key, value));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The record as a JSON object.
    pub fn into_value(self) -> Value {
        Value::Object(self.0.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())
    }

    /// Appends the record's JSON text to `out`, without the fields `drop` names.
    pub fn write_json(&self, out: &mut Vec<u8>, drop: impl Fn(&str) -> bool) {
        out.push(b'{');
        let mut first = true;
        for (key, value) in self.0.iter().filter(|(key, _)| !drop(key)) {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, key).expect("writing to memory");
            out.push(b':');
            serde_json::to_writer(&mut *out, value).expect("writing to memory");
        }
        out.push(b'}');
    }
}

impl Index<&str> for Fields {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NULL)
    }
}

/// `fields["key"] = value` replaces the field, or adds it after the others.
impl IndexMut<&'static str> for Fields {
    fn index_mut(&mut self, key: &'static str) -> &mut Value {
        let at = match self.0.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.0.push((key, Value::Null));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn fields_read_write_and_serialise_as_the_same_json_object_would() {
        let (id, maybe) = (7, None::<i64>);
        let mut made = fields!({
            "id": id,
            "nested": {"a": [1, 2], "b": null},
            "when": if id > 3 { json!("later") } else { json!(null) },
            "maybe": maybe,
            "empty": [],
        });
        let mut expected = json!({
            "id": id,
            "nested": {"a": [1, 2], "b": null},
            "when": "later",
            "maybe": null,
            "empty": [],
        });
        made["extra"] = json!(true);
        made["id"] = json!(8);
        expected["extra"] = json!(true);
        expected["id"] = json!(8);
        assert_eq!(made["nested"]["a"][1], 2);
        assert_eq!(made["missing"], json!(null));
        assert_eq!(serde_json::to_string(&made).unwrap(), serde_json::to_string(&expected).unwrap());
        let mut written = Vec::new();
        made.write_json(&mut written, |key| key == "nested");
        expected.as_object_mut().unwrap().shift_remove("nested");
        assert_eq!(String::from_utf8(written).unwrap(), expected.to_string());
        assert_eq!(
            made.into_value(),
            json!({"id": 8, "nested": {"a": [1, 2], "b": null}, "when": "later", "maybe": null, "empty": [], "extra": true})
        );
    }
}
