//! Deterministic records: one seed and a party count give the same account every time.
//!
//! Everything scales with the number of parties; the ratios below are picked so a demo account
//! exercises every shape: persons with and without an organisation, open/completed/pending tasks,
//! tasks on tracks, entries of all three types on all three parents, explicit nulls, empty arrays,
//! unicode, date-only fields beside timestamps, an undocumented `enrichment` field, restricted
//! records in the deleted feeds and custom-field/tag ids that repeat across entities.
//!
//! The same functions make an account's records (each from its own streams, see
//! [`super::blueprint`]) and the records mutations add to a running account ([`Source::Live`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::blueprint::{AccountStream, Blueprint, Collection, ID_BLOCK, Part, Recipe};
use super::fields::{Fields, fields};
use super::names::*;
use super::reference::{Reference, initials, nested_user, picture};
use super::{Account, Entity, RefFields, Stored, Tombstone, TrackInstance, entry_at, timestamp};

/// The instant the generated history ends: every generated timestamp is before it.
pub(crate) fn dataset_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap()
}

/// Where the records a new record references come from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// The generated account: a reference is to a random generated record, made from its identity.
    Base(&'a Blueprint),
    /// A running account: a reference is to a random record it holds now.
    Live(&'a Account),
}

impl<'a> Source<'a> {
    fn reference(self) -> &'a Reference {
        match self {
            Source::Base(blueprint) => &blueprint.reference,
            Source::Live(account) => account.reference(),
        }
    }
}

/// The randomness and ids one record (or, for mutations, a batch of records) is made with.
pub(crate) struct Gen {
    pub rng: ChaCha8Rng,
    /// What a record's identity (name, type) is drawn from: a stream of its own for a generated
    /// record, so references to it are made without making it; `rng` otherwise.
    identity: Option<ChaCha8Rng>,
    /// The last id given out, and the end of the ids this generator may give.
    last_id: i64,
    id_end: i64,
    /// The id the next record made takes (a generated record's block start), if fixed.
    fixed_id: Option<i64>,
    /// For a running account: the ids of records new records may reference.
    live: LiveRefs,
}

/// The ids of a running account's records, gathered when a mutation first needs them.
#[derive(Default)]
struct LiveRefs {
    refs: BTreeMap<Entity, Vec<i64>>,
    orgs: Option<Vec<i64>>,
}

/// A record just made, before it is stored in the account.
pub(crate) struct Fresh {
    pub updated: DateTime<Utc>,
    pub body: Fields,
}

impl Fresh {
    pub fn id(&self) -> i64 {
        self.body["id"].as_i64().expect("a generated record has an id")
    }
}

impl Gen {
    /// The generator of one generated record: its two streams and its block of ids.
    pub fn for_block(rng: ChaCha8Rng, identity: ChaCha8Rng, ids: Range<i64>) -> Gen {
        Gen {
            rng,
            identity: Some(identity),
            last_id: ids.start,
            id_end: ids.end,
            fixed_id: Some(ids.start),
            live: LiveRefs::default(),
        }
    }

    /// A generator that continues an existing account: new ids above every id in it.
    pub fn continuing(seed: u64, a: &Account) -> Gen {
        let mut live = LiveRefs::default();
        for (entity, records) in &a.records {
            live.refs.insert(*entity, records.keys().copied().collect());
        }
        let tombstones = a.deleted.values().chain(a.restricted.values()).flatten();
        let max_id = a
            .records
            .values()
            .flat_map(|m| m.keys().copied())
            .chain(a.tasks.keys().copied())
            .chain(a.entries.keys().copied())
            .chain(a.tracks.keys().copied())
            .chain(tombstones.filter_map(|t| t.body["id"].as_i64()))
            .max()
            .unwrap_or(0);
        Gen::beyond(ChaCha8Rng::seed_from_u64(seed), max_id.max(a.blueprint.end_of_ids()) + ID_BLOCK, live)
    }

    /// A generator whose ids start above `first_id` and never end.
    fn beyond(rng: ChaCha8Rng, first_id: i64, live: LiveRefs) -> Gen {
        Gen { rng, identity: None, last_id: first_id, id_end: i64::MAX, fixed_id: None, live }
    }

    /// Notes a record so later records can reference it.
    pub fn remember(&mut self, entity: Entity, record: &Fresh) {
        self.live.refs.entry(entity).or_default().push(record.id());
        if record.body["type"] == "organisation"
            && let Some(orgs) = &mut self.live.orgs
        {
            orgs.push(record.id());
        }
    }

    /// Keeps a record made for a running account.
    pub fn keep(&self, record: Fresh) -> Stored {
        Stored::kept(record.updated, &record.body)
    }

    /// The nested reference to a random record of `entity`.
    fn pick_ref(&mut self, src: Source, entity: Entity) -> Option<Value> {
        match src {
            Source::Base(blueprint) => {
                let count = blueprint.sizes.of_entity(entity);
                (count > 0).then(|| reference(entity, &blueprint.identity(entity, self.rng.random_range(0..count))))
            }
            Source::Live(a) => {
                let refs = self.live.refs.get(&entity).filter(|refs| !refs.is_empty())?;
                let id = refs[self.rng.random_range(0..refs.len())];
                a.records[&entity].get(&id).map(|r| reference(entity, &r.fields()))
            }
        }
    }

    /// The nested reference to a random organisation (`None` when there is none).
    fn pick_org(&mut self, src: Source) -> Option<Value> {
        let org = match src {
            Source::Base(blueprint) => {
                // Every third party is an organisation (and some others).
                let parties = blueprint.sizes.parties;
                if !self.rng.random_bool(0.6) {
                    return None;
                }
                let index = self.rng.random_range(0..parties);
                blueprint.identity(Entity::Parties, index - index % 3)
            }
            Source::Live(a) => {
                let parties = &a.records[&Entity::Parties];
                let orgs = self.live.orgs.get_or_insert_with(|| {
                    let is_org = |r: &Stored| r.fields().kind.as_deref() == Some("organisation");
                    parties.iter().filter(|(_, r)| is_org(r)).map(|(id, _)| *id).collect()
                });
                if orgs.is_empty() || !self.rng.random_bool(0.6) {
                    return None;
                }
                let id = orgs[self.rng.random_range(0..orgs.len())];
                parties.get(&id)?.fields()
            }
        };
        Some(json!({"id": org.id, "name": org.name, "pictureURL": org.picture_url}))
    }

    /// The next id: a random 1–3 above the last, like a real account's.
    pub fn id(&mut self) -> i64 {
        self.last_id += self.rng.random_range(1..4);
        assert!(self.last_id < self.id_end, "a generated record used more ids than its block of {ID_BLOCK}");
        self.last_id
    }

    /// The id of the record being made: its block's first for a generated record.
    fn record_id(&mut self) -> i64 {
        self.fixed_id.take().unwrap_or_else(|| self.id())
    }

    /// The stream a record's identity is drawn from.
    fn identity_rng(&mut self) -> &mut ChaCha8Rng {
        self.identity.as_mut().unwrap_or(&mut self.rng)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        items.choose(&mut self.rng).expect("non-empty list")
    }

    /// A creation time within three years before the epoch, and a later update time.
    pub fn created_updated(&mut self) -> (DateTime<Utc>, DateTime<Utc>) {
        let epoch = dataset_epoch();
        let created = epoch - Duration::seconds(self.rng.random_range(86_400..3 * 365 * 86_400));
        let span = (epoch - created).num_seconds();
        let updated =
            if self.chance(0.4) { created } else { created + Duration::seconds(self.rng.random_range(0..span)) };
        (created, updated)
    }

    pub fn date_near(&mut self, t: DateTime<Utc>) -> String {
        let d = t + Duration::days(self.rng.random_range(-30..120));
        d.date_naive().format("%Y-%m-%d").to_string()
    }
}

/// Generates the account of `party_count` parties from `seed`: every record is made once, to
/// learn its id and times, and kept as its recipe.
pub(crate) fn generate(seed: u64, party_count: usize) -> Account {
    let blueprint = Blueprint::new(seed, party_count);
    let mut a = Account::new(blueprint.clone());
    for entity in Entity::ALL {
        // Collected in ascending id order: the map is built with full nodes.
        a.records.insert(entity, every_record_of(&blueprint, Collection::of_entity(entity)).collect());
    }
    let mut tasks: Vec<(i64, Stored)> = every_record_of(&blueprint, Collection::Tasks).collect();
    add_tracks(&blueprint, &mut a, &mut tasks);
    a.tasks = tasks.into_iter().collect();
    let entries = (0..blueprint.sizes.entries).map(|index| {
        let recipe = Recipe::whole(Collection::Entries, index);
        let entry = blueprint.make(recipe);
        let (id, record) = kept_as_recipe(&blueprint, recipe, &entry);
        (entry_at(&entry.body["entryAt"]), id, record)
    });
    a.set_entries(entries.collect());
    let mut history =
        Gen::beyond(blueprint.account_stream(AccountStream::History), blueprint.end_of_ids(), LiveRefs::default());
    add_history_of_deletions(&mut history, &mut a, party_count);
    a
}

/// A made record as the account keeps it: its id, and its recipe beside its `updatedAt`.
fn kept_as_recipe(blueprint: &Arc<Blueprint>, recipe: Recipe, record: &Fresh) -> (i64, Stored) {
    (record.id(), Stored::generated(record.updated, blueprint, recipe))
}

/// Every record of a collection, made once, in ascending id order.
fn every_record_of(blueprint: &Arc<Blueprint>, collection: Collection) -> impl Iterator<Item = (i64, Stored)> + '_ {
    (0..blueprint.sizes.of_collection(collection)).map(move |index| {
        let recipe = Recipe::whole(collection, index);
        kept_as_recipe(blueprint, recipe, &blueprint.make(recipe))
    })
}

/// The tracks on every opportunity and case, and their tasks (added to `tasks`).
fn add_tracks(blueprint: &Arc<Blueprint>, a: &mut Account, tasks: &mut Vec<(i64, Stored)>) {
    for (entity, collection) in
        [(Entity::Opportunities, Collection::OpportunityTracks), (Entity::Kases, Collection::KaseTracks)]
    {
        for index in 0..blueprint.sizes.of_entity(entity) {
            let tracks = tracks_on(&mut blueprint.gen_for(collection, index), blueprint, entity, index);
            let parent_id = blueprint.first_id(Collection::of_entity(entity), index);
            for (n, (track, track_tasks)) in (0u8..).zip(tracks) {
                for (k, task) in (0u8..).zip(track_tasks) {
                    tasks.push(kept_as_recipe(
                        blueprint,
                        Recipe { collection, part: Part::TrackTask(n, k), index },
                        &task,
                    ));
                }
                let (id, record) =
                    kept_as_recipe(blueprint, Recipe { collection, part: Part::Track(n), index }, &track);
                a.tracks.insert(id, TrackInstance { parent: entity, parent_id, record });
            }
        }
    }
}

pub(crate) fn insert(g: &mut Gen, a: &mut Account, entity: Entity, record: Fresh) {
    g.remember(entity, &record);
    a.records.get_mut(&entity).expect("entity map").insert(record.id(), g.keep(record));
}

/// What references to a record copy: a party's type and names, others' name. Drawn from the
/// record's identity stream.
pub(crate) fn identity(entity: Entity, rng: &mut ChaCha8Rng, id: i64, organisation: bool) -> RefFields {
    let pick = |rng: &mut ChaCha8Rng, items: &[&'static str]| *items.choose(rng).expect("non-empty list");
    let mut who = RefFields { id: json!(id), ..RefFields::default() };
    match entity {
        Entity::Parties if organisation => {
            let name = format!("{} {}", pick(rng, ORG_WORDS), pick(rng, ORG_SUFFIXES));
            who.kind = Some("organisation".into());
            who.picture_url = json!(picture(&initials(&name)));
            who.name = json!(name);
        }
        Entity::Parties => {
            let first = pick(rng, FIRST_NAMES);
            who.kind = Some("person".into());
            who.picture_url = json!(picture(&initials(first)));
            who.first_name = json!(first);
            who.last_name = if rng.random_bool(0.05) { Value::Null } else { json!(pick(rng, LAST_NAMES)) };
        }
        Entity::Opportunities => {
            who.name = json!(format!("{} #{}", pick(rng, DEAL_WORDS), rng.random_range(1..999)));
        }
        Entity::Kases => who.name = json!(pick(rng, &["Research", "Onboarding", "Complaint", "Implementation"])),
    }
    who
}

pub(crate) fn random_owner(g: &mut Gen, src: Source) -> Value {
    if g.chance(0.1) {
        return Value::Null;
    }
    let extras = g.chance(0.5);
    nested_user(g.pick(&src.reference().users), extras)
}

fn random_team(g: &mut Gen, src: Source) -> Value {
    if g.chance(0.7) {
        return Value::Null;
    }
    let team = g.pick(&src.reference().teams);
    json!({"id": team["id"], "name": team["name"]})
}

fn nested_party(p: &RefFields) -> Value {
    let mut nested = json!({"id": p.id, "type": p.kind, "pictureURL": p.picture_url});
    if p.kind.as_deref() == Some("person") {
        nested["firstName"] = p.first_name.clone();
        nested["lastName"] = p.last_name.clone();
    } else {
        nested["name"] = p.name.clone();
    }
    nested
}

fn random_party(g: &mut Gen, src: Source) -> Value {
    g.pick_ref(src, Entity::Parties).expect("parties exist before their opportunities and cases")
}

/// Custom-field values for a record; number values are strings, as the API returns them.
fn field_values(g: &mut Gen, src: Source, entity: Entity) -> Value {
    let mut values = Vec::new();
    for def in &src.reference().field_definitions[&entity] {
        if !g.chance(0.5) {
            continue;
        }
        let value = match def["type"].as_str().unwrap_or("text") {
            "number" => json!(format!("{}", g.rng.random_range(0..1000))),
            "boolean" => json!(g.chance(0.5)),
            "date" => json!(g.date_near(dataset_epoch())),
            "list" => json!(g.pick(def["options"].as_array().expect("list options")).clone()),
            "link" => json!("https://example.com/ticket/42"),
            _ => json!(*g.pick(NOTE_WORDS)),
        };
        let mut v = json!({
            "id": g.id(),
            "definition": {"id": def["id"], "name": def["name"]},
            "value": value,
        });
        if let Some(tag) = def.get("tag") {
            v["tagId"] = tag["id"].clone();
        }
        values.push(v);
    }
    Value::Array(values)
}

fn tag_values(g: &mut Gen, src: Source, entity: Entity) -> Value {
    let tags: Vec<Value> = src.reference().tags[&entity].iter().filter(|_| g.chance(0.3)).cloned().collect();
    Value::Array(tags)
}

pub(crate) fn new_party(g: &mut Gen, src: Source, organisation: bool) -> Fresh {
    let (created, updated) = g.created_updated();
    let id = g.record_id();
    let who = identity(Entity::Parties, g.identity_rng(), id, organisation);
    let (city, country) = *g.pick(CITIES);
    let mut p = fields!({
        "id": id,
        "owner": random_owner(g, src),
        "team": random_team(g, src),
        "about": if g.chance(0.2) { json!(*g.pick(NOTE_WORDS)) } else { Value::Null },
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "lastContactedAt": if g.chance(0.3) { json!(timestamp(updated)) } else { Value::Null },
        "enrichment": null,
        "phoneNumbers": if g.chance(0.6) {
            json!([{"id": g.id(), "type": null, "number": format!("+44 20 7946 {:04}", id % 10_000)}])
        } else { json!([]) },
        "addresses": if g.chance(0.5) {
            json!([{"id": g.id(), "type": if g.chance(0.5) { json!("Office") } else { Value::Null },
                    "street": format!("{} High Street", id % 300), "city": city,
                    "state": if city == "Chicago" { json!("IL") } else { Value::Null },
                    "country": country, "zip": format!("{:05}", id % 99_999)}])
        } else { json!([]) },
        "emailAddresses": [],
        "websites": [],
        "tags": tag_values(g, src, Entity::Parties),
        "fields": field_values(g, src, Entity::Parties),
        "missingImportantFields": [],
    });
    p["type"] = json!(who.kind);
    p["pictureURL"] = who.picture_url;
    if organisation {
        p["websites"] = json!([{"id": g.id(), "type": null, "address": "capsulecrm.com",
                                "service": "URL", "url": "http://capsulecrm.com"}]);
        p["name"] = who.name;
    } else {
        let first = who.first_name.as_str().unwrap_or_default().to_lowercase();
        let organisation = g.pick_org(src).unwrap_or(Value::Null);
        p["title"] = if g.chance(0.3) { json!("Mr") } else { Value::Null };
        p["jobTitle"] = if g.chance(0.5) { json!(*g.pick(JOB_TITLES)) } else { Value::Null };
        p["organisation"] = organisation;
        p["emailAddresses"] = json!([{"id": g.id(), "type": "Work", "address": format!("{first}.{id}@example.com")}]);
        p["firstName"] = who.first_name;
        p["lastName"] = who.last_name;
    }
    Fresh { updated, body: p }
}

fn milestone_ref(g: &mut Gen, src: Source) -> (Value, bool) {
    let m = g.pick(&src.reference().open_milestones);
    (json!({"id": m["id"], "name": m["name"]}), m["complete"] == true)
}

pub(crate) fn new_opportunity(g: &mut Gen, src: Source) -> Fresh {
    let (created, updated) = g.created_updated();
    let id = g.record_id();
    let (milestone, complete) = milestone_ref(g, src);
    let lost = complete && milestone["name"] == "Lost";
    let basis = *g.pick(&["FIXED", "MONTH", "YEAR"]);
    let lost_reason = if lost {
        let r = g.pick(&src.reference().lost_reasons);
        json!({"id": r["id"], "name": r["name"]})
    } else {
        Value::Null
    };
    let o = fields!({
        "id": id,
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "party": random_party(g, src),
        "lostReason": lost_reason,
        "name": identity(Entity::Opportunities, g.identity_rng(), id, false).name,
        "description": if g.chance(0.5) { json!(*g.pick(NOTE_WORDS)) } else { Value::Null },
        "owner": random_owner(g, src),
        "team": random_team(g, src),
        "milestone": milestone.clone(),
        "value": {"amount": g.rng.random_range(100..50_000), "currency": *g.pick(&["GBP", "EUR", "USD"])},
        "expectedCloseOn": g.date_near(updated),
        "probability": g.rng.random_range(0..=100),
        "durationBasis": basis,
        "duration": if basis == "FIXED" { Value::Null } else { json!(g.rng.random_range(1..24)) },
        "closedOn": if complete { json!(g.date_near(updated)) } else { Value::Null },
        "lastContactedAt": null,
        "lastStageChangedAt": timestamp(updated),
        "lastOpenMilestone": if complete { Value::Null } else { milestone },
        "tags": tag_values(g, src, Entity::Opportunities),
        "fields": field_values(g, src, Entity::Opportunities),
        "missingImportantFields": [],
    });
    Fresh { updated, body: o }
}

pub(crate) fn new_kase(g: &mut Gen, src: Source) -> Fresh {
    let (created, updated) = g.created_updated();
    let id = g.record_id();
    let closed = g.chance(0.3);
    let opportunity =
        if g.chance(0.3) { g.pick_ref(src, Entity::Opportunities).unwrap_or(Value::Null) } else { Value::Null };
    let stage = *g.pick(&[(271006, "Planning"), (104607, "Project Brief"), (149, "Delivery")]);
    let k = fields!({
        "id": id,
        "owner": random_owner(g, src),
        "team": random_team(g, src),
        "party": random_party(g, src),
        "status": if closed { "CLOSED" } else { "OPEN" },
        "opportunity": opportunity,
        "stage": {"name": stage.1, "id": stage.0},
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "description": *g.pick(DEAL_WORDS),
        "name": identity(Entity::Kases, g.identity_rng(), id, false).name,
        "closedOn": if closed { json!(g.date_near(updated)) } else { Value::Null },
        "lastContactedAt": null,
        "expectedCloseOn": g.date_near(updated),
        "startOn": if g.chance(0.5) { json!(g.date_near(created)) } else { Value::Null },
        "tags": tag_values(g, src, Entity::Kases),
        "fields": field_values(g, src, Entity::Kases),
        "missingImportantFields": [],
    });
    Fresh { updated, body: k }
}

/// A task, optionally on a track of a given parent (which forces `hasTrack`).
pub(crate) fn new_task(g: &mut Gen, src: Source, track_parent: Option<(Entity, Value, &str)>) -> Fresh {
    let (created, updated) = g.created_updated();
    let status = *g.pick(&["OPEN", "OPEN", "COMPLETED", "PENDING"]);
    let category = if g.chance(0.6) {
        let c = g.pick(&src.reference().categories);
        json!({"id": c["id"], "name": c["name"], "colour": c["colour"]})
    } else {
        Value::Null
    };
    let mut t = fields!({
        "id": g.record_id(),
        "category": category,
        "description": *g.pick(TASK_WORDS),
        "detail": if g.chance(0.3) { json!(*g.pick(NOTE_WORDS)) } else { Value::Null },
        "dueTime": if g.chance(0.3) { json!("09:30") } else { Value::Null },
        "status": status,
        "party": null, "opportunity": null, "kase": null,
        "owner": random_owner(g, src),
        "daysAfter": null, "taskDelayRule": null, "nextTask": null,
        "active": true,
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "dueOn": g.date_near(created),
        "completedBy": if status == "COMPLETED" { json!("scott") } else { Value::Null },
        "completedAt": if status == "COMPLETED" { json!(timestamp(updated)) } else { Value::Null },
        "taskDayDelayRule": "TRACK_DAYS",
        "overrideToCurrentUser": null,
        "repeat": if g.chance(0.05) { json!({"interval": 3, "frequency": "MONTHLY", "on": "1"}) } else { Value::Null },
        "hasTrack": false,
    });
    match track_parent {
        Some((entity, parent_ref, description)) => {
            t["hasTrack"] = json!(true);
            t["description"] = json!(description);
            t["daysAfter"] = json!(g.rng.random_range(1..30));
            t["taskDelayRule"] = json!("TRACK_START");
            let key = if entity == Entity::Opportunities { "opportunity" } else { "kase" };
            t[key] = parent_ref;
        }
        None => {
            let key = *g.pick(&["party", "party", "opportunity", "kase"]);
            let entity = match key {
                "party" => Entity::Parties,
                "opportunity" => Entity::Opportunities,
                _ => Entity::Kases,
            };
            if let Some(r) = g.pick_ref(src, entity) {
                t[key] = r;
            }
        }
    }
    Fresh { updated, body: t }
}

fn reference(entity: Entity, fields: &RefFields) -> Value {
    match entity {
        Entity::Parties => nested_party(fields),
        _ => json!({"id": fields.id, "name": fields.name}),
    }
}

/// The tracks on one opportunity or case (about one in ten has one, some two), each with its
/// tasks, which `/tasks` lists too.
pub(crate) fn tracks_on(g: &mut Gen, bp: &Blueprint, entity: Entity, index: u32) -> Vec<(Fresh, Vec<Fresh>)> {
    if !g.chance(0.1) {
        return Vec::new();
    }
    let parent = reference(entity, &bp.identity(entity, index));
    let tracks_here = if g.chance(0.2) { 2 } else { 1 };
    let mut tracks = Vec::new();
    for _ in 0..tracks_here {
        let def = g.pick(&bp.reference.track_definitions);
        let mut tasks = Vec::new();
        for td in def["taskDefinitions"].as_array().expect("a track definition's tasks") {
            let desc = td["description"].as_str().expect("a task definition's description");
            tasks.push(new_task(g, Source::Base(bp), Some((entity, parent.clone(), desc))));
        }
        let updated = dataset_epoch();
        let body = fields!({
            "id": g.id(),
            "tasks": tasks.iter().map(|t| json!({"id": t.id(), "description": t.body["description"]})).collect::<Vec<_>>(),
            "description": def["description"],
            "direction": def["direction"],
            "trackDateOn": g.date_near(updated),
        });
        tracks.push((Fresh { updated, body }, tasks));
    }
    tracks
}

pub(crate) fn new_entry(g: &mut Gen, src: Source) -> Fresh {
    let (created, updated) = g.created_updated();
    let kind = *g.pick(&["note", "note", "email", "task"]);
    let activity = match kind {
        "task" => json!({"id": -4, "name": "Task completed"}),
        _ => {
            let at = g.pick(&src.reference().activity_types[..3]);
            json!({"id": at["id"], "name": at["name"]})
        }
    };
    let creator = g.pick(&src.reference().users);
    // entryAt is user-settable: sometimes back-dated before createdAt.
    let entry_at = if g.chance(0.2) { created - Duration::days(g.rng.random_range(1..400)) } else { created };
    let mut e = fields!({
        "id": g.record_id(),
        "type": kind,
        "creator": nested_user(creator, false),
        "activityType": activity,
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "entryAt": timestamp(entry_at),
        "content": *g.pick(NOTE_WORDS),
        "attachments": [],
        "party": null, "kase": null, "opportunity": null,
    });
    if kind == "email" {
        e["subject"] = json!(format!("Re: {}", g.pick(DEAL_WORDS)));
        e["participants"] = json!([{"id": g.id(), "address": "someone@example.com", "role": "TO", "name": "Someone"}]);
    }
    if g.chance(0.1) {
        e["attachments"] = json!([{"id": g.id(), "filename": "works of William Shakespeare.pdf",
                                  "contentType": "application/pdf", "size": 5_557_452}]);
    }
    let key = *g.pick(&["party", "party", "opportunity", "kase"]);
    let entity = match key {
        "party" => Entity::Parties,
        "opportunity" => Entity::Opportunities,
        _ => Entity::Kases,
    };
    if let Some(r) = g.pick_ref(src, entity) {
        e[key] = r;
    }
    Fresh { updated, body: e }
}

/// Deletions and restrictions that happened before the epoch, so first runs see tombstones.
fn add_history_of_deletions(g: &mut Gen, a: &mut Account, party_count: usize) {
    for (entity, n) in [
        (Entity::Parties, party_count / 50),
        (Entity::Opportunities, party_count / 100),
        (Entity::Kases, party_count / 200),
    ] {
        for _ in 0..n.max(1) {
            let (_, at) = g.created_updated();
            let body = json!({"id": g.id(), "deletedAt": timestamp(at)});
            a.deleted.get_mut(&entity).unwrap().push(Tombstone { at, body });
        }
        let restricted: Vec<Value> = match entity {
            Entity::Parties => vec![
                json!({"id": g.id(), "type": "person", "firstName": null, "lastName": "Private",
                       "pictureURL": picture("P"), "isRestricted": true}),
                json!({"id": g.id(), "type": "organisation", "name": "Private",
                       "pictureURL": picture("P"), "isRestricted": true}),
            ],
            _ => vec![json!({"id": g.id(), "name": "Private", "isRestricted": true})],
        };
        for body in restricted {
            let (_, at) = g.created_updated();
            a.restricted.get_mut(&entity).unwrap().push(Tombstone { at, body });
        }
    }
}
