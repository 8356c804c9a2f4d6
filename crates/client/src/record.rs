//! Records as Capsule sent them: a listing page's text, and each record's top-level fields
//! borrowed from it with their values left as raw JSON text.
//!
//! Why not `serde_json::Value`: turning a page into a tree of values allocated every string,
//! array and nested object of every record, and kept each record's fields in a hashed map. On
//! the connector's hot path (JSON → row → gzip) those trees and maps took about a third of its
//! CPU. A row needs a record's top-level fields only, most of them copied as they came (text,
//! numbers, nested objects): parsing them into values to serialise them again was avoidable work.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON object's top-level fields, each value its raw text, borrowed from the text parsed.
#[derive(Debug, Default, Clone)]
pub struct RawRecord<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawRecord<'a> {
    /// The object `text` holds (an error if it is not a JSON object).
    pub fn parse(text: &'a str) -> serde_json::Result<RawRecord<'a>> {
        serde_json::from_str(text)
    }

    /// A field's raw value (`null` included), if the record has the field.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(key, _)| key == name).map(|(_, value)| *value)
    }

    /// Takes a field out of the record.
    pub fn remove(&mut self, name: &str) -> Option<&'a RawValue> {
        let at = self.fields.iter().position(|(key, _)| key == name)?;
        Some(self.fields.remove(at).1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(key, _)| key.as_ref())
    }

    /// The fields in the order they came.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.fields.iter().map(|(key, value)| (key.as_ref(), *value))
    }

    /// The value at a dotted path (`opportunity.id`), parsed: only the top-level field's text is.
    pub fn value(&self, path: &str) -> Option<Value> {
        let mut parts = path.split('.');
        let mut current: Value = serde_json::from_str(self.get(parts.next()?)?.get()).ok()?;
        for part in parts {
            current = current.get_mut(part)?.take();
        }
        Some(current)
    }

    /// A top-level field that is a JSON string, unescaped.
    pub fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        let raw = self.get(name)?.get();
        if !raw.starts_with('"') {
            return None;
        }
        // A string without escapes is its text between the quotes.
        match raw[1..raw.len() - 1].contains('\\') {
            false => Some(Cow::Borrowed(&raw[1..raw.len() - 1])),
            true => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
        }
    }

    /// A top-level field that is an RFC 3339 timestamp, as an instant (`updatedAt`, `entryAt`).
    pub fn instant(&self, name: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.str(name)?).ok().map(|t| t.with_timezone(&Utc))
    }
}

impl<'de> Deserialize<'de> for RawRecord<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = RawRecord<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawRecord<'de>, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(32));
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    fields.push((key, value));
                }
                Ok(RawRecord { fields })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A member name, borrowed from the text unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(name)))
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(name.to_string())))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Why a response body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (cut or garbled in transit: worth asking again).
    Garbled(String),
    /// JSON, but not of the shape expected (Capsule's answer: asking again changes nothing).
    Shape(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            BodyError::Garbled(m) | BodyError::Shape(m) => f.write_str(m),
        }
    }
}

/// One listing page as Capsule sent it: its text, where each item of the envelope (and of the
/// extra envelopes asked for) lies in it, and the next page. Records are parsed as they are
/// read ([`ListingPage::records`]), borrowing from the page.
#[derive(Debug)]
pub struct ListingPage {
    text: String,
    items: Vec<Range<usize>>,
    extras: Vec<Vec<Range<usize>>>,
    /// The request, for errors naming a record that is not an object.
    request: String,
    pub next: Option<url::Url>,
}

impl ListingPage {
    /// Finds the items of `envelope` (an error naming what is wrong if it is not an array) and of
    /// `extra_envelopes` (absent ones are empty) in a page's `text`.
    pub fn new(
        text: String,
        envelope: &str,
        extra_envelopes: &[&str],
        request: String,
        next: Option<url::Url>,
    ) -> Result<ListingPage, BodyError> {
        let body = RawRecord::parse(&text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => BodyError::Shape(format!("body is not a JSON object: {e}")),
            _ => BodyError::Garbled(format!("{e} ({} bytes)", text.len())),
        })?;
        let Some(raw) = body.get(envelope) else {
            let keys: Vec<&str> = body.keys().collect();
            return Err(BodyError::Shape(format!("no `{envelope}` array in the response (keys present: {keys:?})")));
        };
        let items = ranges_in(&text, raw)
            .ok_or_else(|| BodyError::Shape(format!("`{envelope}` is {} where an array was expected", kind(raw))))?;
        let extras = extra_envelopes
            .iter()
            .map(|key| body.get(key).and_then(|raw| ranges_in(&text, raw)).unwrap_or_default())
            .collect();
        Ok(ListingPage { items, extras, request, next, text })
    }

    /// Items of the envelope.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The envelope's records, in page order; an item that is not a JSON object is an error
    /// naming the request.
    pub fn records(&self) -> impl Iterator<Item = capsule_core::Result<RawRecord<'_>>> {
        self.items.iter().map(|range| self.record(range))
    }

    /// Items of the extra envelopes, all together.
    pub fn extras_len(&self) -> usize {
        self.extras.iter().map(Vec::len).sum()
    }

    /// The records of the `i`th extra envelope asked for.
    pub fn extra_records(&self, i: usize) -> impl Iterator<Item = capsule_core::Result<RawRecord<'_>>> {
        self.extras.get(i).into_iter().flatten().map(|range| self.record(range))
    }

    fn record(&self, range: &Range<usize>) -> capsule_core::Result<RawRecord<'_>> {
        RawRecord::parse(&self.text[range.clone()]).map_err(|e| self.bad(e))
    }

    fn bad(&self, e: serde_json::Error) -> capsule_core::SyncError {
        capsule_core::SyncError::BadResponse {
            request: self.request.clone(),
            message: format!("a listed item is not an object: {e}"),
        }
    }
}

/// Where each element of the array `raw` (borrowed from `text`) lies in `text`; None if `raw`
/// is not an array.
fn ranges_in(text: &str, raw: &RawValue) -> Option<Vec<Range<usize>>> {
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
    let base = text.as_ptr() as usize;
    let range = |item: &&RawValue| {
        let start = item.get().as_ptr() as usize - base;
        start..start + item.get().len()
    };
    Some(items.iter().map(range).collect())
}

/// What kind of JSON value a raw value is, for errors.
fn kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_fields_are_borrowed_raw_text_and_read_on_demand() {
        let text = r#"{"id": 7, "name": "Ann \"A\"", "organisation": {"id": 3, "name": "Acme"}, "k\u0065y": null}"#;
        let mut record = RawRecord::parse(text).unwrap();
        assert_eq!(record.keys().collect::<Vec<_>>(), ["id", "name", "organisation", "key"]);
        assert_eq!(record.get("organisation").unwrap().get(), r#"{"id": 3, "name": "Acme"}"#);
        assert_eq!(record.value("organisation.id"), Some(Value::from(3)));
        assert_eq!(record.str("name").as_deref(), Some("Ann \"A\""));
        assert_eq!(record.str("id"), None, "not a string");
        assert_eq!(record.get("key").unwrap().get(), "null");
        assert_eq!(record.remove("id").unwrap().get(), "7");
        assert!(record.get("id").is_none());
        assert!(RawRecord::parse("[1]").is_err());
    }

    #[test]
    fn a_page_finds_its_items_and_names_what_is_wrong() {
        let text = r#"{ "parties" : [ {"id": 1}, {"id": 2} ], "restricted": [{"id": 3}] }"#.to_string();
        let page = ListingPage::new(text, "parties", &["restricted", "absent"], "GET /x".into(), None).unwrap();
        let ids: Vec<String> = page.records().map(|r| r.unwrap().get("id").unwrap().get().to_string()).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(page.extra_records(0).count(), 1);
        assert_eq!(page.extra_records(1).count(), 0);
        let err =
            ListingPage::new(r#"{"other": []}"#.into(), "parties", &[], "GET /x".into(), None).unwrap_err().to_string();
        assert!(err.contains("no `parties` array") && err.contains("other"), "{err}");
        let err = ListingPage::new(r#"{"parties": {}}"#.into(), "parties", &[], "GET /x".into(), None)
            .unwrap_err()
            .to_string();
        let garbled = ListingPage::new(r#"{"parties": [{"id"#.into(), "parties", &[], "GET /x".into(), None);
        assert!(matches!(garbled, Err(BodyError::Garbled(_))), "{garbled:?}");
        assert!(err.contains("is an object where an array was expected"), "{err}");
        let page = ListingPage::new(r#"{"parties": [1]}"#.into(), "parties", &[], "GET /x".into(), None).unwrap();
        let err = page.records().next().unwrap().unwrap_err();
        assert!(err.to_string().contains("GET /x"), "{err}");
    }
}
