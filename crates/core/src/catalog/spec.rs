//! The original integration spec's columns that Capsule API v2 does not provide on that table,
//! each with the reason and where the data is instead. (The spec's misspelt names that do exist
//! are column aliases in `tables.rs`: `updateAt`, `wbesites`, `lastContactAt`, …) Asking for
//! one of these gets its reason, not a generic "unknown column".

use serde::Serialize;

/// A spec column this table cannot have.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NotProvided {
    pub table: &'static str,
    /// The spec's names for it (misspellings included).
    pub columns: &'static [&'static str],
    pub reason: &'static str,
}

const PARTY_FIELDS_ON_ENTRIES: &str = "a field of the entry's party, not of the entry: entries embed the party as \
     `party` {id, name, type, pictureURL}; select `party` and join `parties` on `party.id` for the rest";
const CONTACT_FIELDS: &str = "a field of the linked party, not of this record: select `party` and join `parties` on \
     `party.id`";

/// Every spec column that is not provided, by table.
pub const NOT_PROVIDED: &[NotProvided] = &[
    NotProvided {
        table: "entries",
        columns: &[
            "team",
            "about",
            "title",
            "firstname",
            "lastname",
            "jobTitle",
            "organisation",
            "addresses",
            "phoneNumbers",
            "emailAddresses",
            "websites",
            "wbesites",
        ],
        reason: PARTY_FIELDS_ON_ENTRIES,
    },
    NotProvided {
        table: "opportunities",
        columns: &["pictureURL", "addresses", "phoneNumbers", "emailAddresses", "websites", "wbesites"],
        reason: CONTACT_FIELDS,
    },
    NotProvided {
        table: "tasks",
        columns: &["pictureURL", "addresses", "phoneNumbers", "emailAddresses", "websites", "wbesites"],
        reason: CONTACT_FIELDS,
    },
    NotProvided {
        table: "teams",
        columns: &["description"],
        reason: "not in Capsule API v2: GET /teams returns id, name, createdAt and updatedAt only",
    },
    NotProvided {
        table: "track_definitions",
        columns: &["trackDateOn"],
        reason: "a field of each track (`tracks.trackDateOn`), not of its definition",
    },
    NotProvided {
        table: "deleted_parties",
        columns: &["restrictedParties"],
        reason: "restricted parties are rows of this table with `_restricted = true` (and `_deleted = false`)",
    },
    NotProvided {
        table: "deleted_cases",
        columns: &["restrictedKases", "restrictedCases"],
        reason: "restricted cases are rows of this table with `_restricted = true` (and `_deleted = false`)",
    },
    NotProvided {
        table: "deleted_cases",
        columns: &["restrictedParties"],
        reason: "the spec's copy of DeletedParties' list: restricted cases are rows of this table with \
                 `_restricted = true` (and `_deleted = false`); restricted parties are in `deleted_parties`",
    },
    NotProvided {
        table: "deleted_opportunities",
        columns: &["restrictedOpportunities"],
        reason: "restricted opportunities are rows of this table with `_restricted = true` (and `_deleted = false`)",
    },
];

/// Columns Capsule sends as a nested record (`{"id": 3, "name": "The North"}`) where a flat spec
/// holds the related record's id as a number: the spec's NUMERIC `team` is the RECORD `team`
/// here, its id at `team.id`. Every other column keeps the spec's type family (text, number,
/// timestamp, date, boolean; lists and custom fields are records).
pub(crate) const NESTED_REFERENCES: &[&str] = &[
    "activityType",
    "category",
    "creator",
    "kase",
    "lastOpenMilestone",
    "milestone",
    "nextTask",
    "opportunity",
    "organisation",
    "owner",
    "party",
    "pipeline",
    "stage",
    "team",
    "trackDefinition",
    "user",
];

/// The spec's type for a column that is a nested record here, and where its id is.
pub fn spec_type_of(column: &str) -> Option<String> {
    NESTED_REFERENCES.contains(&column).then(|| format!("NUMERIC in the spec, a RECORD here: its id is `{column}.id`"))
}

/// Why `column` is not a column of `table`, if the spec has it.
pub fn not_provided(table: &str, column: &str) -> Option<&'static NotProvided> {
    NOT_PROVIDED.iter().find(|n| n.table == table && n.columns.iter().any(|c| c.eq_ignore_ascii_case(column.trim())))
}
