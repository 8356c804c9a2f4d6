//! A table's name as the catalog spells it: only a name the catalog knows is one, so an event
//! or argument naming an unknown table is refused where it comes in.

use std::fmt;

use super::{TABLES, TableSpec, table, table_names};
use crate::SyncError;

/// The name of a catalog table, as the catalog spells it (`Cases` is read as `cases`). Stored and
/// sent as the plain name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(into = "String")]
pub struct TableName(&'static str);

// By hand: a derived impl would borrow the `&'static str` from the input.
impl<'de> serde::Deserialize<'de> for TableName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TableName, D::Error> {
        let name = String::deserialize(deserializer)?;
        table(&name).map(TableName::from).ok_or_else(|| serde::de::Error::custom(unknown(&name)))
    }
}

impl TableName {
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The table's catalog entry (the name is the catalog's own spelling: an exact match).
    pub fn spec(self) -> &'static TableSpec {
        TABLES.iter().find(|t| t.name == self.0).expect("a TableName is a catalog name")
    }

    /// The catalog entries of `names`, each once, in the order given.
    pub fn specs(names: &[TableName]) -> Vec<&'static TableSpec> {
        let mut specs: Vec<&'static TableSpec> = Vec::new();
        for name in names {
            if !specs.iter().any(|s| s.name == name.0) {
                specs.push(name.spec());
            }
        }
        specs
    }
}

impl From<&'static TableSpec> for TableName {
    fn from(spec: &'static TableSpec) -> TableName {
        TableName(spec.name)
    }
}

impl std::str::FromStr for TableName {
    type Err = SyncError;
    fn from_str(name: &str) -> crate::Result<TableName> {
        table(name).map(TableName::from).ok_or_else(|| SyncError::Config(unknown(name)))
    }
}

fn unknown(name: &str) -> String {
    format!("unknown table `{name}`; valid tables: {}", table_names().join(", "))
}

impl From<TableName> for String {
    fn from(name: TableName) -> String {
        name.0.to_string()
    }
}

impl std::ops::Deref for TableName {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl PartialEq<str> for TableName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TableName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for TableName {
    fn eq(&self, other: &String) -> bool {
        self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_name_is_a_catalog_name() {
        let cases: TableName = "Cases".parse().unwrap();
        assert_eq!(cases, "cases");
        assert_eq!(serde_json::to_value(cases).unwrap(), "cases");
        assert_eq!(cases.spec().name, "cases");
        let err = serde_json::from_str::<TableName>("\"partys\"").unwrap_err().to_string();
        assert!(err.contains("unknown table `partys`") && err.contains("parties"), "{err}");
    }
}
