//! The 22 tables. Field names are Capsule's real ones (`../shared/docs/capsule-api.md` §3, §4);
//! the original spec's misspellings are aliases. Read this file as a table, not as code.

use super::ColumnType::{Boolean as B, Date as D, Integer as N, Record as R, String as S, Timestamp as T};
use super::{
    Column, ColumnType, Constant, ConstantValue, ExtraEnvelope, Fetch, Filter, Listing, Membership, ParentDiscovery,
    ParentTarget, Replication, TableSpec,
};

const fn c(name: &'static str, ty: ColumnType) -> Column {
    Column { name, ty, aliases: &[] }
}

const fn alias(name: &'static str, ty: ColumnType, aliases: &'static [&'static str]) -> Column {
    Column { name, ty, aliases }
}

/// A plain listing of `path` under `envelope`, 100 per page.
const fn list(path: &'static str, envelope: &'static str) -> Listing {
    Listing::plain(path, envelope, 100)
}

const fn constant(column: &'static str, value: &'static str) -> Constant {
    Constant { column, value: ConstantValue::Str(value) }
}

const fn flag(column: &'static str, value: bool) -> Constant {
    Constant { column, value: ConstantValue::Bool(value) }
}

const ID: Column = c("id", N);
const CREATED: Column = c("createdAt", T);
const UPDATED: Column = alias("updatedAt", T, &["updateAt", "updated_at"]);
const ENTITY: Column = c("entity", S);
const EMBED_TAGS_FIELDS: &[(&str, &str)] = &[("embed", "tags,fields")];
const ALL_TASK_STATUSES: &[(&str, &str)] = &[("status", "open,completed,pending")];

const PARTY_COLUMNS: &[Column] = &[
    ID,
    c("type", S),
    c("firstName", S),
    c("lastName", S),
    c("title", S),
    c("jobTitle", S),
    c("name", S),
    alias("organisation", R, &["organization"]),
    c("about", S),
    c("owner", R),
    c("team", R),
    CREATED,
    UPDATED,
    alias("lastContactedAt", T, &["lastContactAt"]),
    c("addresses", R),
    c("phoneNumbers", R),
    alias("websites", R, &["wbesites"]),
    alias("emailAddresses", R, &["emails", "emailAdresses"]),
    alias("pictureURL", S, &["pictureUrl"]),
    c("tags", R),
    c("fields", R),
    c("missingImportantFields", R),
    c("enrichment", R),
];

const DELETED_COLUMNS: &[Column] = &[ID, c("deletedAt", T)];
const TOMBSTONE_FLAGS: &[Column] = &[c("_deleted", B), c("_restricted", B)];

const TOMBSTONE: &[Constant] = &[flag("_deleted", true), flag("_restricted", false)];
const RESTRICTED: &[Constant] = &[flag("_deleted", false), flag("_restricted", true)];

/// A deleted feed: tombstones, plus the records that became restricted to the caller.
/// (Macros, not const fns: the arrays must be built in the const context to be `'static`.)
macro_rules! deleted_feed {
    ($path:literal, $envelope:literal, $restricted_key:literal) => {
        Listing {
            constants: TOMBSTONE,
            extra_envelopes: &[ExtraEnvelope { key: $restricted_key, constants: RESTRICTED }],
            ..list($path, $envelope)
        }
    };
}

/// One entity's listing of a union table, tagged with the `entity` column.
macro_rules! entity_listing {
    ($path:literal, $envelope:literal, $entity:literal) => {
        Listing { constants: &[constant("entity", $entity)], ..list($path, $envelope) }
    };
}

pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "parties",
        description: "People and organisations",
        replication: Replication::Incremental,
        fetch: Fetch::Listings(&[Listing {
            params: EMBED_TAGS_FIELDS,
            deleted_feed: Some("/parties/deleted"),
            ..list("/parties", "parties")
        }]),
        primary_key: &["id"],
        columns: PARTY_COLUMNS,
        added: &[],
    },
    TableSpec {
        name: "cases",
        description: "Projects (called kases in the API)",
        replication: Replication::Incremental,
        fetch: Fetch::Listings(&[Listing {
            params: EMBED_TAGS_FIELDS,
            deleted_feed: Some("/kases/deleted"),
            ..list("/kases", "kases")
        }]),
        primary_key: &["id"],
        columns: &[
            ID,
            c("name", S),
            c("description", S),
            c("status", S),
            c("party", R),
            c("owner", R),
            c("team", R),
            c("opportunity", R),
            c("stage", R),
            CREATED,
            UPDATED,
            c("closedOn", D),
            alias("lastContactedAt", T, &["lastContactAt"]),
            alias("expectedCloseOn", D, &["expectedClosedOn"]),
            c("startOn", D),
            c("tags", R),
            c("fields", R),
            c("missingImportantFields", R),
        ],
        added: &[],
    },
    TableSpec {
        name: "opportunities",
        description: "Sales opportunities",
        replication: Replication::Incremental,
        fetch: Fetch::Listings(&[Listing {
            params: EMBED_TAGS_FIELDS,
            deleted_feed: Some("/opportunities/deleted"),
            ..list("/opportunities", "opportunities")
        }]),
        primary_key: &["id"],
        columns: &[
            ID,
            c("name", S),
            c("description", S),
            c("party", R),
            c("owner", R),
            c("team", R),
            c("milestone", R),
            alias("lostReason", R, &["loastReason"]),
            c("value", R),
            alias("expectedCloseOn", D, &["expectedClosedOn"]),
            c("probability", N),
            c("durationBasis", S),
            c("duration", N),
            c("closedOn", D),
            CREATED,
            UPDATED,
            alias("lastContactedAt", T, &["lastContactAt"]),
            c("lastStageChangedAt", T),
            c("lastOpenMilestone", R),
            c("tags", R),
            c("fields", R),
            c("missingImportantFields", R),
        ],
        added: &[],
    },
    TableSpec {
        name: "deleted_opportunities",
        description: "Tombstones of deleted (and newly restricted) opportunities",
        replication: Replication::DeletedFeed,
        fetch: Fetch::Listings(&[deleted_feed!("/opportunities/deleted", "opportunities", "restrictedOpportunities")]),
        primary_key: &["id"],
        columns: DELETED_COLUMNS,
        added: TOMBSTONE_FLAGS,
    },
    TableSpec {
        name: "deleted_parties",
        description: "Tombstones of deleted (and newly restricted) parties",
        replication: Replication::DeletedFeed,
        fetch: Fetch::Listings(&[deleted_feed!("/parties/deleted", "parties", "restrictedParties")]),
        primary_key: &["id"],
        columns: DELETED_COLUMNS,
        added: TOMBSTONE_FLAGS,
    },
    TableSpec {
        name: "deleted_cases",
        description: "Tombstones of deleted (and newly restricted) cases",
        replication: Replication::DeletedFeed,
        fetch: Fetch::Listings(&[deleted_feed!("/kases/deleted", "kases", "restrictedKases")]),
        primary_key: &["id"],
        columns: DELETED_COLUMNS,
        added: TOMBSTONE_FLAGS,
    },
    TableSpec {
        name: "entries",
        description: "Notes, emails and completed tasks on the timeline (global feed, newest first)",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[Listing {
            params: &[("embed", "party,kase,opportunity,creator,activityType")],
            newest_first: Some("entryAt"),
            ..list("/entries", "entries")
        }]),
        primary_key: &["id"],
        columns: &[
            ID,
            c("type", S),
            c("entryAt", T),
            c("subject", S),
            c("content", S),
            c("creator", R),
            c("activityType", R),
            c("party", R),
            c("kase", R),
            c("opportunity", R),
            c("parties", R),
            c("participants", R),
            c("attachments", R),
            CREATED,
            UPDATED,
        ],
        added: &[],
    },
    TableSpec {
        name: "employees",
        description: "People linked to an organisation (derived from /parties, incrementally: no call per organisation, no full re-read)",
        replication: Replication::Incremental,
        // The parties table reads this very listing: its snapshot committed earlier in the same
        // sync, over at least this run's window, stands in for reading every page again.
        fetch: Fetch::Listings(&[Listing {
            params: EMBED_TAGS_FIELDS,
            filters: &[Filter::Equals("type", "person")],
            membership: Some(Membership { conditions: &[Filter::IsObject("organisation")], removed_flag: "_removed" }),
            deleted_feed: Some("/parties/deleted"),
            same_listing_as: Some("parties"),
            ..list("/parties", "parties")
        }]),
        primary_key: &["id"],
        columns: PARTY_COLUMNS,
        added: &[c("_removed", B)],
    },
    TableSpec {
        name: "track_definitions",
        description: "Track templates and their task definitions",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[Listing {
            params: &[("type", "all")],
            ..list("/trackdefinitions", "trackDefinitions")
        }]),
        primary_key: &["id"],
        columns: &[
            ID,
            c("description", S),
            c("tag", S),
            c("captureRule", S),
            c("direction", S),
            c("taskDefinitions", R),
            CREATED,
            UPDATED,
        ],
        added: &[],
    },
    TableSpec {
        name: "teams",
        description: "Teams",
        replication: Replication::Full,
        // `memberships` is documented as an embed whose shape Capsule does not show
        // (UNCONFIRMED): kept as JSON as it comes, null when the API sends none.
        fetch: Fetch::Listings(&[Listing { params: &[("embed", "memberships")], ..list("/teams", "teams") }]),
        primary_key: &["id"],
        columns: &[ID, c("name", S), CREATED, UPDATED, c("memberships", R)],
        added: &[],
    },
    TableSpec {
        name: "users",
        description: "Users of the account",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[list("/users", "users")]),
        primary_key: &["id"],
        columns: &[
            ID,
            c("username", S),
            c("name", S),
            c("status", S),
            c("locale", S),
            c("currency", S),
            c("timezone", S),
            c("party", R),
            c("lastLoginAt", T),
            alias("taskReminder", B, &["taskRemainder"]),
            alias("emailPreference", S, &["emailPredrence"]),
            alias("clickToCallPreference", S, &["clickToCallPrefrence"]),
            c("preferredEmailFromAddress", S),
            c("deleted", B),
            c("loggedIn", B),
            c("pictureURL", S),
        ],
        added: &[],
    },
    TableSpec {
        name: "tasks",
        description: "Tasks in every status (the API's default is open only)",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[Listing { params: ALL_TASK_STATUSES, ..list("/tasks", "tasks") }]),
        primary_key: &["id"],
        columns: &[
            ID,
            c("description", S),
            c("detail", S),
            c("status", S),
            c("category", R),
            c("dueOn", D),
            c("dueTime", S),
            c("party", R),
            c("opportunity", R),
            c("kase", R),
            c("owner", R),
            c("completedBy", S),
            c("completedAt", T),
            c("hasTrack", B),
            c("nextTask", R),
            c("taskDelayRule", S),
            c("taskDayDelayRule", S),
            c("daysAfter", N),
            c("repeat", R),
            c("active", B),
            alias("overrideToCurrentUser", B, &["overrideToCirrentUser"]),
            CREATED,
            UPDATED,
        ],
        added: &[],
    },
    TableSpec {
        name: "tracks",
        description: "Track instances on opportunities and cases (one call per parent that has tracks)",
        replication: Replication::Full,
        fetch: Fetch::FanOut {
            // Every track creates tasks with `hasTrack`, so the parents worth asking are the
            // opportunities and cases named by such tasks: one pass over /tasks instead of a
            // call per opportunity and case.
            discover: &[ParentDiscovery {
                // The tasks table reads this very listing (all statuses) and keeps the fields
                // discovery uses: its snapshot committed earlier in the same sync stands in for
                // reading it again.
                listing: Listing {
                    params: ALL_TASK_STATUSES,
                    filters: &[Filter::IsTrue("hasTrack")],
                    same_listing_as: Some("tasks"),
                    ..list("/tasks", "tasks")
                },
                targets: &[
                    ParentTarget {
                        id_field: "opportunity.id",
                        child_path: "/opportunities/{id}/tracks",
                        entity: Some("opportunities"),
                    },
                    ParentTarget { id_field: "kase.id", child_path: "/kases/{id}/tracks", entity: Some("kases") },
                ],
                // A track's tasks are the track: adding, completing or editing them bumps their
                // `updatedAt` (what a recent read relies on; its blind spots are in the README).
                changed_by: Some("updatedAt"),
            }],
            exhaustive: &[
                ParentDiscovery {
                    listing: list("/opportunities", "opportunities"),
                    targets: &[ParentTarget {
                        id_field: "id",
                        child_path: "/opportunities/{id}/tracks",
                        entity: Some("opportunities"),
                    }],
                    changed_by: None,
                },
                ParentDiscovery {
                    listing: list("/kases", "kases"),
                    targets: &[ParentTarget {
                        id_field: "id",
                        child_path: "/kases/{id}/tracks",
                        entity: Some("kases"),
                    }],
                    changed_by: None,
                },
            ],
            envelope: "tracks",
            parent_id_column: "entityId",
            max_per_page: 100,
        },
        primary_key: &["id"],
        columns: &[
            ID,
            c("description", S),
            c("direction", S),
            c("trackDateOn", D),
            c("tasks", R),
            c("trackDefinition", R),
        ],
        added: &[ENTITY, c("entityId", N)],
    },
    TableSpec {
        name: "custom_fields",
        description: "Custom field definitions of parties, opportunities and cases (ids repeat across entities)",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[
            entity_listing!("/parties/fields/definitions", "definitions", "parties"),
            entity_listing!("/opportunities/fields/definitions", "definitions", "opportunities"),
            entity_listing!("/kases/fields/definitions", "definitions", "kases"),
        ]),
        primary_key: &["entity", "id"],
        columns: &[
            ID,
            c("name", S),
            c("description", S),
            c("type", S),
            c("tag", R),
            c("captureRule", S),
            c("options", R),
            c("important", B),
            c("displayOrder", N),
        ],
        added: &[ENTITY],
    },
    TableSpec {
        name: "tag_definitions",
        description: "Tags of parties, opportunities and cases (ids repeat across entities)",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[
            entity_listing!("/parties/tags", "tags", "parties"),
            entity_listing!("/opportunities/tags", "tags", "opportunities"),
            entity_listing!("/kases/tags", "tags", "kases"),
        ]),
        primary_key: &["entity", "id"],
        columns: &[ID, c("name", S), c("description", S), c("dataTag", B)],
        added: &[ENTITY],
    },
    TableSpec {
        name: "lost_reasons",
        description: "Reasons an opportunity was lost",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[list("/lostreasons", "lostReasons")]),
        primary_key: &["id"],
        columns: &[
            ID,
            c("name", S),
            alias("includedForConversion", B, &["includeForCoversion", "includedForCoversion"]),
            CREATED,
            UPDATED,
        ],
        added: &[],
    },
    TableSpec {
        name: "milestones",
        description: "Milestones of every pipeline, archived ones included (not the legacy /milestones)",
        replication: Replication::Full,
        fetch: Fetch::FanOut {
            discover: &[ParentDiscovery {
                listing: Listing { params: &[("includeDeleted", "true")], ..list("/pipelines", "pipelines") },
                targets: &[ParentTarget { id_field: "id", child_path: "/pipelines/{id}/milestones", entity: None }],
                changed_by: None,
            }],
            exhaustive: &[],
            envelope: "milestones",
            parent_id_column: "pipelineId",
            max_per_page: 100,
        },
        primary_key: &["id"],
        columns: &[
            ID,
            c("name", S),
            c("description", S),
            c("complete", B),
            c("probability", N),
            alias("daysUntilStale", N, &["daysUntilState"]),
            c("pipeline", R),
            CREATED,
            UPDATED,
        ],
        added: &[c("pipelineId", N)],
    },
    TableSpec {
        name: "task_categories",
        description: "Task categories",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[list("/categories", "categories")]),
        primary_key: &["id"],
        columns: &[ID, c("name", S), alias("colour", S, &["color"])],
        added: &[],
    },
    TableSpec {
        name: "activity_types",
        description: "Activity types (built-ins have negative ids)",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[list("/activitytypes", "activityTypes")]),
        primary_key: &["id"],
        columns: &[ID, c("name", S), c("icon", R), c("updateLastContacted", B)],
        added: &[],
    },
    TableSpec {
        name: "countries",
        description: "Countries (the same for every account)",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[list("/countries", "countries")]),
        primary_key: &["alpha2Code"],
        columns: &[c("alpha2Code", S), c("alpha3Code", S), c("numericCode", N), c("name", S)],
        added: &[],
    },
    TableSpec {
        name: "currencies",
        description: "Currencies (the same for every account)",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[list("/currencies", "currencies")]),
        primary_key: &["code"],
        columns: &[c("code", S), c("symbol", S), c("name", S), c("pluralName", S)],
        added: &[],
    },
    TableSpec {
        name: "rest_hooks",
        description: "REST hook subscriptions",
        replication: Replication::Full,
        fetch: Fetch::Listings(&[list("/resthooks", "restHooks")]),
        primary_key: &["id"],
        columns: &[
            ID,
            c("event", S),
            c("targetUrl", S),
            c("embed", S),
            c("batched", B),
            c("description", S),
            c("user", R),
            c("clientId", N),
            CREATED,
            UPDATED,
        ],
        added: &[],
    },
];
