//! REST hooks as catalog data: which events Capsule POSTs for which table, which of them is a
//! deletion, and the columns a hook row carries on top of the table's own. The receiver, the
//! subscriptions and the warehouse views read this; none of them names a table.

use super::{Column, ColumnType, Fetch, TABLES, TableSpec};

/// The tables Capsule sends REST hooks for, with their events (`<entity>/<action>`, as
/// Capsule's REST hook documentation lists them).
#[derive(Debug, Clone, Copy)]
pub struct HookSubject {
    /// The catalog table the records are rows of.
    pub table: &'static str,
    /// Events whose payload is the changed records, each as the API shows it.
    pub changes: &'static [&'static str],
    /// The event whose payload names deleted records (none documented for tasks).
    pub deletion: Option<&'static str>,
}

pub const HOOK_SUBJECTS: &[HookSubject] = &[
    HookSubject { table: "parties", changes: &["party/created", "party/updated"], deletion: Some("party/deleted") },
    HookSubject {
        table: "cases",
        changes: &["kase/created", "kase/updated", "kase/closed", "kase/moved"],
        deletion: Some("kase/deleted"),
    },
    HookSubject {
        table: "opportunities",
        changes: &["opportunity/created", "opportunity/updated", "opportunity/closed", "opportunity/moved"],
        deletion: Some("opportunity/deleted"),
    },
    HookSubject { table: "tasks", changes: &["task/created", "task/updated", "task/completed"], deletion: None },
    HookSubject { table: "users", changes: &["user/created", "user/updated"], deletion: Some("user/deleted") },
];

/// Columns of a row that came by REST hook, after the metadata columns. A hook-fed table's raw
/// table has them on every row; a batch row leaves them null.
pub const HOOK_COLUMNS: &[Column] = &[
    Column { name: "_event", ty: ColumnType::String, aliases: &[] },
    Column { name: "_received_at", ty: ColumnType::Timestamp, aliases: &[] },
    Column { name: "_source", ty: ColumnType::String, aliases: &[] },
    Column { name: "_deleted", ty: ColumnType::Boolean, aliases: &[] },
];

/// `_source` of a row that came by REST hook.
pub const HOOK_SOURCE: &str = "hook";

/// One event Capsule may send.
#[derive(Debug, Clone, Copy)]
pub struct HookEvent {
    pub name: &'static str,
    pub table: &'static TableSpec,
    /// The payload names deleted records: they land as tombstones.
    pub deletion: bool,
}

impl HookSubject {
    pub fn spec(&self) -> &'static TableSpec {
        TABLES.iter().find(|t| t.name == self.table).expect("hook subjects name catalog tables")
    }

    /// Every event of the subject, changes first.
    pub fn events(&self) -> impl Iterator<Item = HookEvent> + '_ {
        let table = self.spec();
        let changes = self.changes.iter().map(move |&name| HookEvent { name, table, deletion: false });
        changes.chain(self.deletion.map(|name| HookEvent { name, table, deletion: true }))
    }

    /// The `embed` the table's listing asks for, so a hook's records have the same columns.
    pub fn embed(&self) -> Option<&'static str> {
        let Fetch::Listings(listings) = self.spec().fetch else { return None };
        listings.iter().flat_map(|l| l.params.iter()).find(|(k, _)| *k == "embed").map(|(_, v)| *v)
    }
}

/// Every event Capsule sends REST hooks for.
pub fn hook_events() -> impl Iterator<Item = HookEvent> {
    HOOK_SUBJECTS.iter().flat_map(HookSubject::events)
}

/// The event called `name`, if Capsule sends one so called.
pub fn hook_event(name: &str) -> Option<HookEvent> {
    hook_events().find(|e| e.name == name)
}

/// The hook subject whose records are rows of `table`.
pub fn hook_subject(table: &str) -> Option<&'static HookSubject> {
    HOOK_SUBJECTS.iter().find(|s| s.table == table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_is_an_id_keyed_catalog_table() {
        for subject in HOOK_SUBJECTS {
            assert_eq!(subject.spec().primary_key, &["id"], "{}", subject.table);
        }
        assert_eq!(hook_events().count(), 19, "the events Capsule documents");
        assert!(hook_event("party/deleted").unwrap().deletion);
        assert_eq!(hook_event("kase/moved").unwrap().table.name, "cases");
        assert!(hook_event("task/deleted").is_none());
        assert_eq!(hook_subject("parties").unwrap().embed(), Some("tags,fields"));
        assert_eq!(hook_subject("users").unwrap().embed(), None);
    }
}
