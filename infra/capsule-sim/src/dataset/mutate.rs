//! Changes to a running account: what the admin API and tests use to make incremental runs
//! have something to find. Every change stamps `updatedAt` (or `deletedAt`) with the wall clock.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::generate::{self, Gen, Source};
use super::{Account, Entity, Stored, Tombstone, timestamp};

/// Share of created entries whose `entryAt` is set in the past (as generated entries are).
pub const BACKDATED_SHARE: f64 = 0.2;

/// Which collection a mutation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MutationKind {
    Parties,
    Opportunities,
    Kases,
    Tasks,
    Entries,
}

/// What to do to the chosen records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MutationOp {
    /// Change a field and advance `updatedAt`.
    Update,
    /// Add new records.
    Create,
    /// Remove records; parties, opportunities and cases get a tombstone in their deleted feed.
    Delete,
    /// Hide records from the caller; they appear in the deleted feed's `restricted*` array.
    Restrict,
    /// A person leaves their organisation (`organisation` becomes null, `updatedAt` advances):
    /// they stop being an employee. Parties only; chosen among persons with an organisation.
    Leave,
}

/// One change request: `{"kind": "parties", "op": "update", "count": 10}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mutation {
    pub kind: MutationKind,
    pub op: MutationOp,
    pub count: usize,
    /// Act on these ids instead of picking `count` records (update, delete, restrict).
    #[serde(default)]
    pub ids: Vec<i64>,
}

/// The ids a mutation touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutationOutcome {
    pub ids: Vec<i64>,
}

/// The table a kind of record lands in, as the connector names it: `cases`, not `Kases`.
impl std::fmt::Display for MutationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MutationKind::Parties => "parties",
            MutationKind::Opportunities => "opportunities",
            MutationKind::Kases => "cases",
            MutationKind::Tasks => "tasks",
            MutationKind::Entries => "entries",
        })
    }
}

/// The change in past tense: `updated`, `restricted`.
impl std::fmt::Display for MutationOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MutationOp::Update => "updated",
            MutationOp::Create => "created",
            MutationOp::Delete => "deleted",
            MutationOp::Restrict => "restricted",
            MutationOp::Leave => "left their organisation:",
        })
    }
}

impl MutationKind {
    fn entity(self) -> Option<Entity> {
        match self {
            MutationKind::Parties => Some(Entity::Parties),
            MutationKind::Opportunities => Some(Entity::Opportunities),
            MutationKind::Kases => Some(Entity::Kases),
            MutationKind::Tasks | MutationKind::Entries => None,
        }
    }
}

impl Account {
    /// Applies a mutation at `now`. Records are chosen deterministically from `seed`.
    pub fn apply(&mut self, m: &Mutation, seed: u64, now: DateTime<Utc>) -> Result<MutationOutcome, String> {
        self.listings.clear();
        let mut g = Gen::continuing(seed, self);
        let ids = match m.op {
            MutationOp::Create => self.create(&mut g, m, now),
            MutationOp::Update => {
                let ids = self.choose(&mut g, m)?;
                for id in &ids {
                    let record = self.collection_mut(m.kind).get_mut(id).expect("chosen id exists");
                    touch(record, now, id);
                }
                ids
            }
            MutationOp::Leave => {
                let ids = self.choose(&mut g, m)?;
                for id in &ids {
                    let record = self.collection_mut(m.kind).get_mut(id).expect("chosen id exists");
                    record.updated = now;
                    record.edit(|body| {
                        body["organisation"] = Value::Null;
                        body["updatedAt"] = json!(timestamp(now));
                    });
                }
                ids
            }
            MutationOp::Delete | MutationOp::Restrict => {
                let ids = self.choose(&mut g, m)?;
                for id in &ids {
                    let removed = self.remove_record(m.kind, *id).expect("chosen id exists");
                    let Some(entity) = m.kind.entity() else {
                        continue;
                    };
                    if m.op == MutationOp::Delete {
                        let body = json!({"id": id, "deletedAt": timestamp(now)});
                        self.deleted.get_mut(&entity).unwrap().push(Tombstone { at: now, body });
                    } else {
                        let body = restricted_view(&removed.body());
                        self.restricted.get_mut(&entity).unwrap().push(Tombstone { at: now, body });
                    }
                }
                ids
            }
        };
        Ok(MutationOutcome { ids })
    }

    fn collection_mut(&mut self, kind: MutationKind) -> &mut std::collections::BTreeMap<i64, Stored> {
        match kind.entity() {
            Some(entity) => self.records.get_mut(&entity).unwrap(),
            None if kind == MutationKind::Tasks => &mut self.tasks,
            None => &mut self.entries,
        }
    }

    fn remove_record(&mut self, kind: MutationKind, id: i64) -> Option<Stored> {
        match kind {
            MutationKind::Entries => self.remove_entry(id),
            _ => self.collection_mut(kind).remove(&id),
        }
    }

    /// The ids given, or `count` distinct random ones.
    fn choose(&mut self, g: &mut Gen, m: &Mutation) -> Result<Vec<i64>, String> {
        if m.op == MutationOp::Restrict && m.kind.entity().is_none() {
            return Err(format!("{} cannot be restricted: only parties, opportunities and cases", m.kind));
        }
        if m.op == MutationOp::Leave && m.kind != MutationKind::Parties {
            return Err(format!("{} cannot leave an organisation: only parties (persons) can", m.kind));
        }
        let collection = self.collection_mut(m.kind);
        // Only leaving needs to read the records (to find persons with an organisation).
        let eligible = |record: &Stored| m.op != MutationOp::Leave || is_employee(&record.body());
        if !m.ids.is_empty() {
            if let Some(missing) = m.ids.iter().find(|id| !collection.get(id).is_some_and(eligible)) {
                return Err(format!("no {} record with id {missing} can take this mutation", m.kind));
            }
            return Ok(m.ids.clone());
        }
        let mut pool: Vec<i64> = collection.iter().filter(|(_, r)| eligible(r)).map(|(id, _)| *id).collect();
        if m.count > pool.len() {
            return Err(format!("asked for {} {} records, the account has {}", m.count, m.kind, pool.len()));
        }
        let mut chosen = Vec::with_capacity(m.count);
        for _ in 0..m.count {
            let i = g.rng.random_range(0..pool.len());
            chosen.push(pool.swap_remove(i));
        }
        chosen.sort_unstable();
        Ok(chosen)
    }

    fn create(&mut self, g: &mut Gen, m: &Mutation, now: DateTime<Utc>) -> Vec<i64> {
        let mut ids = Vec::new();
        for _ in 0..m.count {
            let mut record = match m.kind {
                MutationKind::Parties => {
                    let organisation = g.chance(0.3);
                    generate::new_party(g, Source::Live(self), organisation)
                }
                MutationKind::Opportunities => generate::new_opportunity(g, Source::Live(self)),
                MutationKind::Kases => generate::new_kase(g, Source::Live(self)),
                MutationKind::Tasks => generate::new_task(g, Source::Live(self), None),
                MutationKind::Entries => generate::new_entry(g, Source::Live(self)),
            };
            record.updated = now;
            // A new entry is dated now, unless logged back-dated (an old email, a late note).
            let entry_at = (m.kind == MutationKind::Entries).then(|| match g.chance(BACKDATED_SHARE) {
                true => now - Duration::days(g.rng.random_range(1..400)),
                false => now,
            });
            record.body["createdAt"] = json!(timestamp(now));
            record.body["updatedAt"] = json!(timestamp(now));
            if let Some(at) = entry_at {
                record.body["entryAt"] = json!(timestamp(at));
            }
            let id = record.id();
            match (m.kind.entity(), m.kind) {
                (Some(entity), _) => generate::insert(g, self, entity, record),
                (None, MutationKind::Entries) => self.insert_entry(g, record),
                (None, _) => {
                    let stored = g.keep(record);
                    self.collection_mut(m.kind).insert(id, stored);
                }
            }
            ids.push(id);
        }
        ids
    }
}

/// A person with an organisation.
pub fn is_employee(body: &Value) -> bool {
    body["type"] == "person" && body["organisation"].is_object()
}

/// Marks a record changed: a visible field edit plus a new `updatedAt`.
fn touch(record: &mut Stored, now: DateTime<Utc>, id: &i64) {
    record.updated = now;
    record.edit(|body| {
        body["updatedAt"] = json!(timestamp(now));
        let field = if body.get("about").is_some() { "about" } else { "description" };
        body[field] = json!(format!("edited at {} (record {id})", timestamp(now)));
    });
}

/// What a deleted feed shows for a record that became restricted: an id and "Private".
fn restricted_view(body: &Value) -> Value {
    if body["type"] == "person" {
        json!({"id": body["id"], "type": "person", "firstName": null, "lastName": "Private",
               "pictureURL": body["pictureURL"], "isRestricted": true})
    } else if body["type"] == "organisation" {
        json!({"id": body["id"], "type": "organisation", "name": "Private",
               "pictureURL": body["pictureURL"], "isRestricted": true})
    } else {
        json!({"id": body["id"], "name": "Private", "isRestricted": true})
    }
}

impl Mutation {
    /// The REST hook event Capsule raises for this change (`party/updated`), if any: entries
    /// have none, nor does a restriction or a task's deletion.
    pub fn hook_event(&self) -> Option<String> {
        let entity = match self.kind {
            MutationKind::Parties => "party",
            MutationKind::Opportunities => "opportunity",
            MutationKind::Kases => "kase",
            MutationKind::Tasks => "task",
            MutationKind::Entries => return None,
        };
        let action = match self.op {
            MutationOp::Create => "created",
            MutationOp::Update | MutationOp::Leave => "updated",
            MutationOp::Delete if self.kind != MutationKind::Tasks => "deleted",
            MutationOp::Delete | MutationOp::Restrict => return None,
        };
        Some(format!("{entity}/{action}"))
    }
}

impl Account {
    /// What a REST hook carries for the records a mutation touched: each as the API returns it
    /// now, or for a deletion its id alone (what Capsule sends for one is UNCONFIRMED).
    pub fn hook_payload(&self, m: &Mutation, ids: &[i64]) -> Vec<Value> {
        let collection = match m.kind.entity() {
            Some(entity) => &self.records[&entity],
            None if m.kind == MutationKind::Tasks => &self.tasks,
            None => &self.entries,
        };
        ids.iter()
            .map(|id| match collection.get(id) {
                Some(record) if m.op != MutationOp::Delete => record.body(),
                _ => json!({ "id": id }),
            })
            .collect()
    }
}
