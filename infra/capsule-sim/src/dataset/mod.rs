//! The simulated Capsule account: every collection the 22 tables read, held in memory.
//!
//! Records are the JSON text the API returns (field names and shapes follow the API samples).
//! A generated record is not kept but made again whenever it is read ([`blueprint`]); a record
//! that changed since is kept as its text ([`Stored`]). Each sits beside its `updatedAt`, so
//! `since` filters do not make the record. That is what lets one process hold an account of a
//! million parties in ~40 bytes a record (a party is ~1 KB as text, ~10 KB as a `Value` tree).
//! Maps are keyed by id, so listing order is ascending id: stable while records change, which
//! is what a real offset-paged API gives.

mod blueprint;
mod fields;
mod generate;
mod mutate;
mod names;
mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use blueprint::{Blueprint, Sizes};
pub use mutate::{Mutation, MutationKind, MutationOp, MutationOutcome, is_employee};
pub use reference::Reference;

use blueprint::Recipe;

/// The three entities that have `since`, deleted feeds, custom fields and tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    Parties,
    Opportunities,
    Kases,
}

impl Entity {
    pub const ALL: [Entity; 3] = [Entity::Parties, Entity::Opportunities, Entity::Kases];

    /// The path segment and list envelope key (`parties`, `opportunities`, `kases`).
    pub fn path(self) -> &'static str {
        match self {
            Entity::Parties => "parties",
            Entity::Opportunities => "opportunities",
            Entity::Kases => "kases",
        }
    }

    /// The envelope key of the restricted records in the deleted feed.
    pub fn restricted_key(self) -> &'static str {
        match self {
            Entity::Parties => "restrictedParties",
            Entity::Opportunities => "restrictedOpportunities",
            Entity::Kases => "restrictedKases",
        }
    }

    pub fn from_path(segment: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.path() == segment)
    }
}

/// One record and the time it last changed.
#[derive(Clone)]
pub struct Stored {
    pub updated: DateTime<Utc>,
    text: Text,
}

/// Where a record's text comes from.
#[derive(Clone)]
enum Text {
    /// Made again from the account's blueprint whenever it is read.
    Generated(Arc<Blueprint>, Recipe),
    /// Changed or created on the running account: its JSON text. Boxed twice so the pointer is
    /// thin: a stored record stays 32 bytes, and only changed records pay the second box.
    Kept(Box<Box<[u8]>>),
}

impl Stored {
    pub(crate) fn generated(updated: DateTime<Utc>, blueprint: &Arc<Blueprint>, recipe: Recipe) -> Stored {
        Stored { updated, text: Text::Generated(blueprint.clone(), recipe) }
    }

    pub(crate) fn kept(updated: DateTime<Utc>, body: &impl Serialize) -> Stored {
        let json = serde_json::to_vec(body).expect("a JSON value serialises");
        Stored { updated, text: Text::Kept(Box::new(json.into_boxed_slice())) }
    }

    /// The record as the API returns it.
    pub fn body(&self) -> Value {
        match &self.text {
            Text::Generated(blueprint, recipe) => blueprint.make(*recipe).body.into_value(),
            Text::Kept(json) => serde_json::from_slice(json).expect("a kept record is JSON"),
        }
    }

    /// The record's JSON text, as the API returns it.
    pub fn json(&self) -> Vec<u8> {
        let mut json = Vec::new();
        self.write_json(&mut json);
        json
    }

    /// Appends the record's JSON text to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match &self.text {
            Text::Generated(blueprint, recipe) => blueprint.make(*recipe).body.write_json(out, |_| false),
            Text::Kept(json) => out.extend_from_slice(json),
        }
    }

    /// Appends the record's JSON text to `out`, without the top-level keys `drop` names (the
    /// others in their order).
    pub fn write_json_without(&self, out: &mut Vec<u8>, drop: impl Fn(&str) -> bool) {
        match &self.text {
            Text::Generated(blueprint, recipe) => blueprint.make(*recipe).body.write_json(out, drop),
            Text::Kept(_) => {
                let mut body = self.body();
                if let Value::Object(map) = &mut body {
                    map.retain(|key, _| !drop(key));
                }
                serde_json::to_writer(out, &body).expect("writing to memory");
            }
        }
    }

    /// Some fields of the record, read into `T`.
    pub fn read<T: serde::de::DeserializeOwned>(&self) -> T {
        match &self.text {
            Text::Generated(..) => T::deserialize(self.body()).expect("a generated record reads as its typed view"),
            Text::Kept(json) => serde_json::from_slice(json).expect("a kept record reads as its typed view"),
        }
    }

    /// The fields a nested reference to this record copies (a generated party, opportunity or
    /// case's without making it).
    pub fn fields(&self) -> RefFields {
        match &self.text {
            Text::Generated(blueprint, recipe) => match recipe.entity() {
                Some(entity) => blueprint.identity(entity, recipe.index),
                None => self.read(),
            },
            Text::Kept(_) => self.read(),
        }
    }

    /// Changes the record; it is kept as text from then on.
    pub fn edit(&mut self, change: impl FnOnce(&mut Value)) {
        let mut body = self.body();
        change(&mut body);
        *self = Stored::kept(self.updated, &body);
    }

    /// The bytes of its text the account keeps for it (none for a generated record).
    pub fn kept_bytes(&self) -> Option<usize> {
        match &self.text {
            Text::Generated(..) => None,
            Text::Kept(json) => Some(json.len()),
        }
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Stored");
        out.field("updated", &self.updated);
        match &self.text {
            Text::Generated(_, recipe) => out.field("recipe", recipe),
            Text::Kept(json) => out.field("kept_bytes", &json.len()),
        };
        out.finish()
    }
}

/// What nested references (`party`, `organisation`, …) copy from the record they point to.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefFields {
    #[serde(default)]
    pub id: Value,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Value,
    #[serde(default)]
    pub first_name: Value,
    #[serde(default)]
    pub last_name: Value,
    #[serde(rename = "pictureURL", default)]
    pub picture_url: Value,
}

/// A deletion (or a record that became restricted) as the deleted feeds report it.
#[derive(Debug, Clone)]
pub struct Tombstone {
    pub at: DateTime<Utc>,
    pub body: Value,
}

/// A track instance and the record it hangs on (tracks don't carry their parent in GET bodies).
#[derive(Debug, Clone)]
pub struct TrackInstance {
    pub parent: Entity,
    pub parent_id: i64,
    pub record: Stored,
}

/// A pipeline and whether it is archived (`includeDeleted=true` shows it).
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub deleted: bool,
    pub body: Value,
}

/// Everything one simulated Capsule account holds.
#[derive(Debug, Clone)]
pub struct Account {
    /// What the generated records are made from, and the reference data.
    blueprint: Arc<Blueprint>,
    pub records: BTreeMap<Entity, BTreeMap<i64, Stored>>,
    pub deleted: BTreeMap<Entity, Vec<Tombstone>>,
    pub restricted: BTreeMap<Entity, Vec<Tombstone>>,
    pub entries: BTreeMap<i64, Stored>,
    /// Entries by `entryAt` and id, kept as entries come and go: `GET /entries` lists them from
    /// the last (newest, ties: higher id first); see [`Account::newest_entries`].
    entry_order: BTreeSet<(DateTime<Utc>, i64)>,
    pub tasks: BTreeMap<i64, Stored>,
    pub tracks: BTreeMap<i64, TrackInstance>,
    /// The ids of recent listings (emptied by every change), so page N is not found by
    /// skipping N-1 pages of records: paging a million records stays linear.
    pub listings: ListingCache,
}

/// Ids the listing cache holds at most (32 MiB): a sync of a million-party account lists
/// dozens of big collections, and each would otherwise stay until the account changed.
const LISTING_CACHE_IDS: usize = 4 << 20;

/// Ids of a listing (a path and its query, `page` aside), computed on its first page.
#[derive(Default)]
pub struct ListingCache(std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Vec<i64>>>>);

impl ListingCache {
    /// The ids of `key`'s listing, computed by `ids` if not known yet.
    pub fn get_or_insert(&self, key: String, ids: impl FnOnce() -> Vec<i64>) -> std::sync::Arc<Vec<i64>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = map.get(&key) {
            return found.clone();
        }
        let ids = std::sync::Arc::new(ids());
        let held: usize = map.values().map(|ids| ids.len()).sum();
        if held + ids.len() > LISTING_CACHE_IDS {
            map.clear();
        }
        map.insert(key, ids.clone());
        ids
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Clone for ListingCache {
    fn clone(&self) -> ListingCache {
        ListingCache::default()
    }
}

impl std::fmt::Debug for ListingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListingCache")
    }
}

/// How many rows each of the 22 tables holds, computed from the account the way the
/// connector's catalog defines them. Tests compare the connector's output with this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCounts(pub BTreeMap<String, usize>);

impl Account {
    /// Builds the deterministic demo account: same seed and size, same data.
    pub fn generate(seed: u64, parties: usize) -> Account {
        generate::generate(seed, parties)
    }

    /// An account without records yet.
    fn new(blueprint: Arc<Blueprint>) -> Account {
        fn per_entity<T: Default>() -> BTreeMap<Entity, T> {
            Entity::ALL.into_iter().map(|e| (e, T::default())).collect()
        }
        Account {
            blueprint,
            records: per_entity(),
            deleted: per_entity(),
            restricted: per_entity(),
            entries: BTreeMap::new(),
            entry_order: BTreeSet::new(),
            tasks: BTreeMap::new(),
            tracks: BTreeMap::new(),
            listings: ListingCache::default(),
        }
    }

    /// Users, teams, definitions and the other small collections.
    pub fn reference(&self) -> &Reference {
        &self.blueprint.reference
    }

    /// Entry ids as `GET /entries` lists them: newest `entryAt` first, ties higher id first.
    pub fn newest_entries(&self) -> impl Iterator<Item = i64> + '_ {
        self.entry_order.iter().rev().map(|(_, id)| *id)
    }

    /// Adds (or replaces) an entry, keeping the listing order.
    pub(crate) fn insert_entry(&mut self, g: &generate::Gen, entry: generate::Fresh) {
        let id = entry.id();
        self.remove_entry(id);
        self.entry_order.insert((entry_at(&entry.body["entryAt"]), id));
        self.entries.insert(id, g.keep(entry));
    }

    /// Replaces every entry; bulk-built (a map built from a sorted list has full nodes).
    pub(crate) fn set_entries(&mut self, entries: Vec<(DateTime<Utc>, i64, Stored)>) {
        let mut order: Vec<(DateTime<Utc>, i64)> = entries.iter().map(|(at, id, _)| (*at, *id)).collect();
        order.sort_unstable();
        self.entry_order = order.into_iter().collect();
        let mut by_id: Vec<(i64, Stored)> = entries.into_iter().map(|(_, id, entry)| (id, entry)).collect();
        by_id.sort_unstable_by_key(|(id, _)| *id);
        self.entries = by_id.into_iter().collect();
    }

    /// Removes an entry, keeping the listing order.
    pub(crate) fn remove_entry(&mut self, id: i64) -> Option<Stored> {
        let removed = self.entries.remove(&id)?;
        self.entry_order.remove(&(entry_at(&removed.body()["entryAt"]), id));
        Some(removed)
    }

    /// Every stored record: parties, opportunities, cases, tasks, entries and tracks.
    pub fn stored(&self) -> impl Iterator<Item = &Stored> {
        let records = self.records.values().flat_map(|m| m.values());
        records.chain(self.tasks.values()).chain(self.entries.values()).chain(self.tracks.values().map(|t| &t.record))
    }

    /// How many records the account holds, and how many of them it keeps as text (changed or
    /// created since it was generated): what a benchmark reports.
    pub fn kept_size(&self) -> (usize, usize) {
        let kept = self.stored().filter(|r| r.kept_bytes().is_some()).count();
        (self.stored().count(), kept)
    }

    pub fn entity(&self, entity: Entity) -> &BTreeMap<i64, Stored> {
        &self.records[&entity]
    }

    /// Rows per connector table. `since` limits the incremental tables and deleted feeds.
    pub fn table_counts(&self, since: Option<DateTime<Utc>>) -> TableCounts {
        let after = |t: &DateTime<Utc>| since.is_none_or(|s| *t > s);
        let mut counts = BTreeMap::new();
        for (entity, table) in
            [(Entity::Parties, "parties"), (Entity::Opportunities, "opportunities"), (Entity::Kases, "cases")]
        {
            let changed = self.entity(entity).values().filter(|r| after(&r.updated)).count();
            counts.insert(table.to_string(), changed);
            let deleted = self.deleted[&entity].iter().filter(|t| after(&t.at)).count()
                + self.restricted[&entity].iter().filter(|t| after(&t.at)).count();
            counts.insert(format!("deleted_{table}"), deleted);
        }
        let employees = self.entity(Entity::Parties).values().map(Stored::body).filter(mutate::is_employee).count();
        let per_entity = |m: &BTreeMap<Entity, Vec<Value>>| m.values().map(Vec::len).sum::<usize>();
        let reference = self.reference();
        for (table, n) in [
            ("entries", self.entries.len()),
            ("employees", employees),
            ("track_definitions", reference.track_definitions.len()),
            ("teams", reference.teams.len()),
            ("users", reference.users.len()),
            ("tasks", self.tasks.len()),
            ("tracks", self.tracks.len()),
            ("custom_fields", per_entity(&reference.field_definitions)),
            ("tag_definitions", per_entity(&reference.tags)),
            ("lost_reasons", reference.lost_reasons.len()),
            ("milestones", reference.milestones.len()),
            ("task_categories", reference.categories.len()),
            ("activity_types", reference.activity_types.len()),
            ("countries", reference.countries.len()),
            ("currencies", reference.currencies.len()),
            ("rest_hooks", reference.rest_hooks.len()),
        ] {
            counts.insert(table.to_string(), n);
        }
        TableCounts(counts)
    }
}

/// An entry's `entryAt`, from its value (the epoch if it has none: generated entries always have one).
pub(crate) fn entry_at(value: &Value) -> DateTime<Utc> {
    let at = value.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    at.map_or(DateTime::UNIX_EPOCH, |t| t.with_timezone(&Utc))
}

/// Capsule's timestamp format: UTC, second precision, `Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
