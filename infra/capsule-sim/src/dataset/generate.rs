//! Deterministic account generation: one seed and a party count give the same account every time.
//!
//! Everything scales with the number of parties; the ratios below are picked so a demo account
//! exercises every shape: persons with and without an organisation, open/completed/pending tasks,
//! tasks on tracks, entries of all three types on all three parents, explicit nulls, empty arrays,
//! unicode, date-only fields beside timestamps, an undocumented `enrichment` field, restricted
//! records in the deleted feeds and custom-field/tag ids that repeat across entities.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::names::*;
use super::packed::Packing;
use super::{Account, Entity, Pipeline, RefFields, Stored, Tombstone, TrackInstance, entry_at, timestamp};

/// The instant the generated history ends: every generated timestamp is before it.
pub(crate) fn dataset_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap()
}

pub(crate) struct Gen {
    pub rng: ChaCha8Rng,
    /// How the records made here are kept.
    pub packing: Packing,
    next_id: i64,
    /// The ids of records later records may reference, so picking a random parent is O(1); the
    /// nested reference itself is read from the record when picked.
    refs: BTreeMap<Entity, Vec<i64>>,
    /// The ids of organisations (what a person's `organisation` references); `None` until a
    /// continuing generator first needs them.
    orgs: Option<Vec<i64>>,
}

/// A record just made, before it is packed into the account.
pub(crate) struct Fresh {
    pub updated: DateTime<Utc>,
    pub body: Value,
}

impl Fresh {
    pub fn id(&self) -> i64 {
        self.body["id"].as_i64().expect("a generated record has an id")
    }
}

impl Gen {
    pub fn new(seed: u64, packing: Packing) -> Gen {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            packing,
            next_id: 100_000,
            refs: BTreeMap::new(),
            orgs: Some(Vec::new()),
        }
    }

    /// A generator that continues an existing account: new ids above every id in it.
    pub fn continuing(seed: u64, a: &Account) -> Gen {
        let mut g = Gen::new(seed, Packing::compressed());
        for (entity, records) in &a.records {
            g.refs.insert(*entity, records.keys().copied().collect());
        }
        g.orgs = None;
        let max_id = a
            .records
            .values()
            .flat_map(|m| m.keys().copied())
            .chain(a.tasks.keys().copied())
            .chain(a.entries.keys().copied())
            .chain(a.tracks.keys().copied())
            .max()
            .unwrap_or(0);
        g.next_id = g.next_id.max(max_id);
        g
    }

    /// Notes a record so later records can reference it.
    pub fn remember(&mut self, entity: Entity, record: &Fresh) {
        self.refs.entry(entity).or_default().push(record.id());
        if record.body["type"] == "organisation"
            && let Some(orgs) = &mut self.orgs
        {
            orgs.push(record.id());
        }
    }

    /// Packs a record made here.
    pub fn keep(&self, record: Fresh) -> Stored {
        Stored::new(record.updated, &record.body, self.packing)
    }

    /// The nested reference to a random record of `entity`.
    fn pick_ref(&mut self, a: &Account, entity: Entity) -> Option<Value> {
        let refs = self.refs.get(&entity).filter(|refs| !refs.is_empty())?;
        let id = refs[self.rng.random_range(0..refs.len())];
        a.records[&entity].get(&id).map(|r| reference(entity, &r.fields()))
    }

    /// The nested reference to a random organisation (`None` when there is none).
    fn pick_org(&mut self, a: &Account) -> Option<Value> {
        let orgs = self.orgs.get_or_insert_with(|| {
            let parties = &a.records[&Entity::Parties];
            parties
                .iter()
                .filter(|(_, r)| r.fields().kind.as_deref() == Some("organisation"))
                .map(|(id, _)| *id)
                .collect()
        });
        if orgs.is_empty() || !self.rng.random_bool(0.6) {
            return None;
        }
        let id = orgs[self.rng.random_range(0..orgs.len())];
        let org = a.records[&Entity::Parties].get(&id)?.fields();
        Some(json!({"id": org.id, "name": org.name, "pictureURL": org.picture_url}))
    }

    /// Ids grow with gaps, like a real account's.
    pub fn id(&mut self) -> i64 {
        self.next_id += self.rng.random_range(1..4);
        self.next_id
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

fn picture(initials: &str) -> String {
    format!("https://facehub.appspot.com/default/person?text={initials}&size=100")
}

fn initials(name: &str) -> String {
    name.split_whitespace().filter_map(|w| w.chars().next()).filter(|c| c.is_alphanumeric()).take(2).collect()
}

pub(crate) fn generate(seed: u64, party_count: usize) -> Account {
    generate_packed(seed, party_count, Packing::compressed())
}

/// The seed of the account the packing dictionary is trained on (any fixed seed would do).
const SAMPLE_SEED: u64 = 0x5eed;

/// The JSON text of every record of a small account: what the packing dictionary learns from.
pub(crate) fn sample_texts(parties: usize) -> Vec<Vec<u8>> {
    sample_texts_seeded(SAMPLE_SEED, parties)
}

pub(crate) fn sample_texts_seeded(seed: u64, parties: usize) -> Vec<Vec<u8>> {
    generate_packed(seed, parties, Packing::Plain).stored().map(Stored::json).collect()
}

fn generate_packed(seed: u64, party_count: usize, packing: Packing) -> Account {
    let mut g = Gen::new(seed, packing);
    let users = users(&mut g, (party_count / 1000).clamp(3, 25));
    let mut a = Account {
        teams: teams(&users),
        users,
        lost_reasons: lost_reasons(),
        categories: categories(),
        activity_types: activity_types(),
        countries: countries(),
        currencies: currencies(),
        ..Account::default()
    };
    for entity in Entity::ALL {
        a.field_definitions.insert(entity, field_definitions(entity));
        a.tags.insert(entity, tags(entity));
        a.deleted.insert(entity, Vec::new());
        a.restricted.insert(entity, Vec::new());
        a.records.insert(entity, BTreeMap::new());
    }
    pipelines(&mut a);
    a.track_definitions = track_definitions();
    a.rest_hooks = rest_hooks(&a.users);

    for i in 0..party_count {
        let organisation = i % 3 == 0 || i % 7 == 0;
        let party = new_party(&mut g, &a, organisation);
        insert(&mut g, &mut a, Entity::Parties, party);
    }
    refill(a.records.get_mut(&Entity::Parties).expect("parties"));
    for _ in 0..party_count / 4 {
        let opportunity = new_opportunity(&mut g, &a);
        insert(&mut g, &mut a, Entity::Opportunities, opportunity);
    }
    refill(a.records.get_mut(&Entity::Opportunities).expect("opportunities"));
    for _ in 0..party_count.div_ceil(10) {
        let kase = new_kase(&mut g, &a);
        insert(&mut g, &mut a, Entity::Kases, kase);
    }
    refill(a.records.get_mut(&Entity::Kases).expect("kases"));
    // Tasks and entries are never looked up while the account is generated: they are
    // collected first and the maps built from the sorted lists in one go (full nodes, and
    // the lists' memory goes back to the system at once).
    let mut tasks = Vec::with_capacity(party_count / 2);
    for _ in 0..party_count / 2 {
        let task = new_task(&mut g, &a, None);
        tasks.push((task.id(), g.keep(task)));
    }
    add_tracks(&mut g, &mut a, &mut tasks);
    a.tasks = tasks.into_iter().collect();
    refill(&mut a.tracks);
    let mut entries = Vec::with_capacity(party_count);
    for _ in 0..party_count {
        let entry = new_entry(&mut g, &a);
        entries.push((entry_at(&entry.body), entry.id(), g.keep(entry)));
    }
    a.set_entries(entries);
    add_history_of_deletions(&mut g, &mut a, party_count);
    a
}

/// Rebuilds a map generated in ascending key order with full nodes: inserted one by one at its
/// end, a `BTreeMap` leaves every node about half full (~30 bytes a record more).
pub(crate) fn refill<K: Ord, V>(map: &mut BTreeMap<K, V>) {
    *map = std::mem::take(map).into_iter().collect();
}

pub(crate) fn insert(g: &mut Gen, a: &mut Account, entity: Entity, record: Fresh) {
    g.remember(entity, &record);
    a.records.get_mut(&entity).expect("entity map").insert(record.id(), g.keep(record));
}

fn nested_user(u: &Value, real_extras: bool) -> Value {
    let mut nested = json!({"id": u["id"], "username": u["username"], "name": u["name"]});
    if real_extras {
        nested["deleted"] = json!(false);
        nested["pictureURL"] = json!(picture(&initials(u["name"].as_str().unwrap_or("?"))));
    }
    nested
}

pub(crate) fn random_owner(g: &mut Gen, a: &Account) -> Value {
    if g.chance(0.1) {
        return Value::Null;
    }
    let extras = g.chance(0.5);
    let user = g.pick(&a.users).clone();
    nested_user(&user, extras)
}

fn random_team(g: &mut Gen, a: &Account) -> Value {
    if g.chance(0.7) {
        return Value::Null;
    }
    let team = g.pick(&a.teams);
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

fn random_party(g: &mut Gen, a: &Account) -> Value {
    g.pick_ref(a, Entity::Parties).expect("parties exist before their opportunities and cases")
}

/// Custom-field values for a record; number values are strings, as the API returns them.
fn field_values(g: &mut Gen, a: &Account, entity: Entity) -> Value {
    let mut values = Vec::new();
    for def in &a.field_definitions[&entity] {
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

fn tag_values(g: &mut Gen, a: &Account, entity: Entity) -> Value {
    let tags: Vec<Value> = a.tags[&entity].iter().filter(|_| g.chance(0.3)).cloned().collect();
    Value::Array(tags)
}

pub(crate) fn new_party(g: &mut Gen, a: &Account, organisation: bool) -> Fresh {
    let (created, updated) = g.created_updated();
    let id = g.id();
    let (city, country) = *g.pick(CITIES);
    let mut p = json!({
        "id": id,
        "owner": random_owner(g, a),
        "team": random_team(g, a),
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
        "tags": tag_values(g, a, Entity::Parties),
        "fields": field_values(g, a, Entity::Parties),
        "missingImportantFields": [],
    });
    if organisation {
        let name = format!("{} {}", g.pick(ORG_WORDS), g.pick(ORG_SUFFIXES));
        p["type"] = json!("organisation");
        p["pictureURL"] = json!(picture(&initials(&name)));
        p["websites"] = json!([{"id": g.id(), "type": null, "address": "capsulecrm.com",
                                "service": "URL", "url": "http://capsulecrm.com"}]);
        p["name"] = json!(name);
    } else {
        let first = *g.pick(FIRST_NAMES);
        let last = if g.chance(0.05) { Value::Null } else { json!(*g.pick(LAST_NAMES)) };
        let organisation = g.pick_org(a).unwrap_or(Value::Null);
        p["type"] = json!("person");
        p["title"] = if g.chance(0.3) { json!("Mr") } else { Value::Null };
        p["jobTitle"] = if g.chance(0.5) { json!(*g.pick(JOB_TITLES)) } else { Value::Null };
        p["organisation"] = organisation;
        p["pictureURL"] = json!(picture(&initials(first)));
        p["emailAddresses"] = json!([{"id": g.id(), "type": "Work",
                                      "address": format!("{}.{}@example.com", first.to_lowercase(), id)}]);
        p["firstName"] = json!(first);
        p["lastName"] = last;
    }
    Fresh { updated, body: p }
}

fn milestone_ref(g: &mut Gen, a: &Account) -> (Value, bool) {
    let active: Vec<&(i64, Value)> =
        a.milestones.iter().filter(|(pid, _)| a.pipelines.iter().any(|p| !p.deleted && p.body["id"] == *pid)).collect();
    let (_, m) = active[g.rng.random_range(0..active.len())];
    (json!({"id": m["id"], "name": m["name"]}), m["complete"] == true)
}

pub(crate) fn new_opportunity(g: &mut Gen, a: &Account) -> Fresh {
    let (created, updated) = g.created_updated();
    let (milestone, complete) = milestone_ref(g, a);
    let lost = complete && milestone["name"] == "Lost";
    let basis = *g.pick(&["FIXED", "MONTH", "YEAR"]);
    let lost_reason = if lost {
        let r = g.pick(&a.lost_reasons);
        json!({"id": r["id"], "name": r["name"]})
    } else {
        Value::Null
    };
    let o = json!({
        "id": g.id(),
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "party": random_party(g, a),
        "lostReason": lost_reason,
        "name": format!("{} #{}", g.pick(DEAL_WORDS), g.rng.random_range(1..999)),
        "description": if g.chance(0.5) { json!(*g.pick(NOTE_WORDS)) } else { Value::Null },
        "owner": random_owner(g, a),
        "team": random_team(g, a),
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
        "tags": tag_values(g, a, Entity::Opportunities),
        "fields": field_values(g, a, Entity::Opportunities),
        "missingImportantFields": [],
    });
    Fresh { updated, body: o }
}

pub(crate) fn new_kase(g: &mut Gen, a: &Account) -> Fresh {
    let (created, updated) = g.created_updated();
    let closed = g.chance(0.3);
    let opportunity =
        if g.chance(0.3) { g.pick_ref(a, Entity::Opportunities).unwrap_or(Value::Null) } else { Value::Null };
    let stage = *g.pick(&[(271006, "Planning"), (104607, "Project Brief"), (149, "Delivery")]);
    let k = json!({
        "id": g.id(),
        "owner": random_owner(g, a),
        "team": random_team(g, a),
        "party": random_party(g, a),
        "status": if closed { "CLOSED" } else { "OPEN" },
        "opportunity": opportunity,
        "stage": {"name": stage.1, "id": stage.0},
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "description": *g.pick(DEAL_WORDS),
        "name": *g.pick(&["Research", "Onboarding", "Complaint", "Implementation"]),
        "closedOn": if closed { json!(g.date_near(updated)) } else { Value::Null },
        "lastContactedAt": null,
        "expectedCloseOn": g.date_near(updated),
        "startOn": if g.chance(0.5) { json!(g.date_near(created)) } else { Value::Null },
        "tags": tag_values(g, a, Entity::Kases),
        "fields": field_values(g, a, Entity::Kases),
        "missingImportantFields": [],
    });
    Fresh { updated, body: k }
}

/// A task, optionally on a track of a given parent (which forces `hasTrack`).
pub(crate) fn new_task(g: &mut Gen, a: &Account, track_parent: Option<(Entity, Value, &str)>) -> Fresh {
    let (created, updated) = g.created_updated();
    let status = *g.pick(&["OPEN", "OPEN", "COMPLETED", "PENDING"]);
    let category = if g.chance(0.6) {
        let c = g.pick(&a.categories);
        json!({"id": c["id"], "name": c["name"], "colour": c["colour"]})
    } else {
        Value::Null
    };
    let mut t = json!({
        "id": g.id(),
        "category": category,
        "description": *g.pick(TASK_WORDS),
        "detail": if g.chance(0.3) { json!(*g.pick(NOTE_WORDS)) } else { Value::Null },
        "dueTime": if g.chance(0.3) { json!("09:30") } else { Value::Null },
        "status": status,
        "party": null, "opportunity": null, "kase": null,
        "owner": random_owner(g, a),
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
            if let Some(r) = g.pick_ref(a, entity) {
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

/// Tracks on about one in ten opportunities and cases; each track's tasks exist in `/tasks`.
fn add_tracks(g: &mut Gen, a: &mut Account, tasks: &mut Vec<(i64, Stored)>) {
    let definitions = a.track_definitions.clone();
    for entity in [Entity::Opportunities, Entity::Kases] {
        let parents: Vec<i64> = a.records[&entity].keys().copied().collect();
        for parent_id in parents {
            if !g.chance(0.1) {
                continue;
            }
            let parent = a.records[&entity][&parent_id].fields();
            let tracks_here = if g.chance(0.2) { 2 } else { 1 };
            for _ in 0..tracks_here {
                let def = g.pick(&definitions).clone();
                let mut track_tasks = Vec::new();
                for td in def["taskDefinitions"].as_array().unwrap() {
                    let desc = td["description"].as_str().unwrap();
                    let task = new_task(g, a, Some((entity, reference(entity, &parent), desc)));
                    let task_id = task.id();
                    track_tasks.push(json!({"id": task_id, "description": desc}));
                    tasks.push((task_id, g.keep(task)));
                }
                let id = g.id();
                let updated = dataset_epoch();
                let body = json!({
                    "id": id,
                    "tasks": track_tasks,
                    "description": def["description"],
                    "direction": def["direction"],
                    "trackDateOn": g.date_near(updated),
                });
                let record = g.keep(Fresh { updated, body });
                a.tracks.insert(id, TrackInstance { parent: entity, parent_id, record });
            }
        }
    }
}

pub(crate) fn new_entry(g: &mut Gen, a: &Account) -> Fresh {
    let (created, updated) = g.created_updated();
    let kind = *g.pick(&["note", "note", "email", "task"]);
    let activity = match kind {
        "task" => json!({"id": -4, "name": "Task completed"}),
        _ => {
            let at = g.pick(&a.activity_types[..3]);
            json!({"id": at["id"], "name": at["name"]})
        }
    };
    let creator = g.pick(&a.users).clone();
    // entryAt is user-settable: sometimes back-dated before createdAt.
    let entry_at = if g.chance(0.2) { created - Duration::days(g.rng.random_range(1..400)) } else { created };
    let mut e = json!({
        "id": g.id(),
        "type": kind,
        "creator": nested_user(&creator, false),
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
    if let Some(r) = g.pick_ref(a, entity) {
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
            let body = json!({"id": 9_000_000 + g.id(), "deletedAt": timestamp(at)});
            a.deleted.get_mut(&entity).unwrap().push(Tombstone { at, body });
        }
        let restricted: Vec<Value> = match entity {
            Entity::Parties => vec![
                json!({"id": 8_000_000 + g.id(), "type": "person", "firstName": null, "lastName": "Private",
                       "pictureURL": picture("P"), "isRestricted": true}),
                json!({"id": 8_000_000 + g.id(), "type": "organisation", "name": "Private",
                       "pictureURL": picture("P"), "isRestricted": true}),
            ],
            _ => vec![json!({"id": 8_000_000 + g.id(), "name": "Private", "isRestricted": true})],
        };
        for body in restricted {
            let (_, at) = g.created_updated();
            a.restricted.get_mut(&entity).unwrap().push(Tombstone { at, body });
        }
    }
}

fn users(g: &mut Gen, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let first = FIRST_NAMES[i % FIRST_NAMES.len()];
            let last = LAST_NAMES[(i * 7) % LAST_NAMES.len()];
            let name = format!("{first} {last}");
            json!({
                "id": 600_000 + i as i64,
                "locale": if i % 2 == 0 { "en_GB" } else { "en_US" },
                "currency": if i % 3 == 0 { "EUR" } else { "GBP" },
                "status": if i == n - 1 { "DISABLED" } else { "ACTIVE" },
                "party": {"id": 500_000 + i as i64, "type": "person", "firstName": first,
                          "lastName": last, "pictureURL": picture(&initials(&name))},
                "username": format!("{}{}", first.to_lowercase(), i),
                "timezone": "Europe/London",
                "lastLoginAt": if i == n - 1 { Value::Null } else {
                    json!(timestamp(dataset_epoch() - Duration::hours(g.rng.random_range(1..5000))))
                },
                "name": name,
                "taskReminder": i % 2 == 0,
            })
        })
        .collect()
}

/// The sample's three teams. Each keeps its `memberships` (served only with
/// `embed=memberships`): every user in one team, the last team empty. Capsule does not show
/// this shape (UNCONFIRMED); the connector keeps whatever it gets as JSON.
fn teams(users: &[Value]) -> Vec<Value> {
    let mut teams = vec![
        json!({"id": 3, "name": "The North", "createdAt": "2018-02-23T11:46:50Z", "updatedAt": "2018-02-26T12:48:22Z"}),
        json!({"id": 4, "name": "The South", "createdAt": "2018-02-23T11:46:56Z", "updatedAt": "2018-02-26T12:48:31Z"}),
        json!({"id": 5, "name": "Executives", "createdAt": "2018-03-01T10:38:55Z", "updatedAt": "2018-03-01T10:39:01Z"}),
    ];
    let staffed = teams.len() - 1;
    for (t, team) in teams.iter_mut().enumerate() {
        let members = users.iter().enumerate().filter(|(u, _)| t < staffed && u % staffed == t);
        team["memberships"] = members.map(|(_, user)| json!({"user": nested_user(user, false)})).collect();
    }
    teams
}

fn lost_reasons() -> Vec<Value> {
    [
        (99, "Abandoned", false),
        (100, "Poor Qualification", true),
        (101, "Wrong time", true),
        (102, "No Authority", true),
        (103, "Price too high", true),
        (104, "Became Stale", true),
        (105, "Competition", true),
    ]
    .iter()
    .map(|(id, name, inc)| {
        json!({"id": id, "name": name, "includedForConversion": inc,
               "createdAt": "2018-10-09T14:33:26Z", "updatedAt": "2018-10-09T14:33:26Z"})
    })
    .collect()
}

fn categories() -> Vec<Value> {
    [
        (1, "Call", "#d16c1a"),
        (2, "Email", "#444444"),
        (5, "Milestone", "#d1c21a"),
        (6, "Send", "#444444"),
        (47, "Billing", "#d36c00"),
        (205, "Follow-up ✔", "#a3d11a"),
    ]
    .iter()
    .map(|(id, name, colour)| json!({"id": id, "name": name, "colour": colour}))
    .collect()
}

fn activity_types() -> Vec<Value> {
    [
        (-1, "Note", 29, "NOTE", true),
        (-2, "Meeting", 18, "MEETING", false),
        (-3, "Call", 12, "PHONE", false),
        (-4, "Task completed", 30, "TASK", true),
        (17, "Site visit", 40, "CAR", false),
        (18, "Demo", 41, "SCREEN", false),
    ]
    .iter()
    .map(|(id, name, order, icon, system)| {
        json!({"id": id, "name": name,
                   "icon": {"order": order, "id": icon, "displayName": name, "iconName": icon.to_lowercase(),
                            "isSystem": system},
                   "updateLastContacted": *id != -4})
    })
    .collect()
}

fn countries() -> Vec<Value> {
    COUNTRIES
        .iter()
        .map(|(a2, a3, num, name)| json!({"alpha2Code": a2, "alpha3Code": a3, "numericCode": num, "name": name}))
        .collect()
}

fn currencies() -> Vec<Value> {
    CURRENCIES
        .iter()
        .map(|(code, symbol, names)| {
            let mut c = json!({"code": code, "symbol": symbol});
            if let Some((name, plural)) = names {
                c["name"] = json!(name);
                c["pluralName"] = json!(plural);
            }
            c
        })
        .collect()
}

/// Custom-field definitions; ids start at 1 for every entity, so they overlap across entities.
fn field_definitions(entity: Entity) -> Vec<Value> {
    let all = [
        json!({"id": 1, "type": "text", "displayOrder": 1, "name": "Refering Site"}),
        json!({"id": 2, "type": "number", "displayOrder": 1, "name": "Lead Score",
               "tag": {"id": 1499, "name": "Lead", "dataTag": true}}),
        json!({"id": 3, "type": "date", "description": "Birthday Field", "displayOrder": 2,
               "name": "Date of Birth", "captureRule": "person"}),
        json!({"id": 4, "type": "list", "displayOrder": 3, "name": "Industry Sector",
               "captureRule": "organisation",
               "options": ["Technology", "Insurance", "Financial services", "Retail & consumer"]}),
        json!({"id": 5, "type": "boolean", "displayOrder": 4, "name": "Local", "important": true}),
        json!({"id": 6, "type": "link", "description": null, "important": false, "displayOrder": 5,
               "name": "Ticket", "tag": null, "captureRule": null, "options": []}),
    ];
    let n = match entity {
        Entity::Parties => 6,
        Entity::Opportunities => 4,
        Entity::Kases => 3,
    };
    all.into_iter().take(n).collect()
}

/// Tag definitions; ids overlap across entities like the field definitions'.
fn tags(entity: Entity) -> Vec<Value> {
    let all = [
        json!({"id": 1, "name": "Customer", "description": "Contacts that have an active subscription", "dataTag": true}),
        json!({"id": 2, "name": "Nice Guy", "dataTag": false}),
        json!({"id": 3, "name": "VIP ★", "description": null, "dataTag": false}),
        json!({"id": 4, "name": "Supplier", "dataTag": false}),
        json!({"id": 5, "name": "Newsletter", "dataTag": false}),
    ];
    let n = match entity {
        Entity::Parties => 5,
        Entity::Opportunities => 3,
        Entity::Kases => 2,
    };
    all.into_iter().take(n).collect()
}

/// Three pipelines (the third archived) and their milestones.
fn pipelines(a: &mut Account) {
    let specs: [(i64, &str, Option<&str>, bool); 3] = [
        (11588, "Sales Pipeline", None, false),
        (11589, "SMB clients", Some("Process for small and medium-sized businesses"), false),
        (11590, "Legacy (archived)", Some("Old process"), true),
    ];
    let stages =
        [("New", false, 10), ("Bid", false, 50), ("Negotiation", false, 75), ("Won", true, 100), ("Lost", true, 0)];
    let mut milestone_id = 1;
    for (pid, name, description, deleted) in specs {
        let mut body = json!({"id": pid, "name": name});
        if let Some(d) = description {
            body["description"] = json!(d);
        }
        a.pipelines.push(Pipeline { deleted, body });
        for (stage, complete, probability) in stages {
            let mut m = json!({
                "id": milestone_id,
                "name": stage,
                "description": if complete { Value::Null } else { json!(format!("{stage} stage of {name}")) },
                "complete": complete,
                "probability": probability,
                "pipeline": {"name": name, "id": pid},
                "createdAt": "2014-10-30T16:12:41Z",
                "updatedAt": "2015-12-03T09:38:54Z",
            });
            if !complete {
                m["daysUntilStale"] = json!(12);
            }
            a.milestones.push((pid, m));
            milestone_id += 1;
        }
    }
}

fn track_definitions() -> Vec<Value> {
    let task = |id: i64, desc: &str, rule: &str, after: i64, order: i64| {
        json!({"id": id, "description": desc, "daysAfterRule": rule, "daysAfter": after, "displayOrder": order,
               "trackTaskAssignee": {"assigneeType": "ENTITY_OWNER"}, "dayDelayRule": "TRACK_DAYS",
               "category": {"id": 1, "name": "Call", "colour": "#d16c1a"}})
    };
    vec![
        json!({"id": 3, "description": "Complaint Process", "tag": "complaint", "captureRule": "CASEFILE",
               "direction": "START_DATE", "createdAt": "2015-06-04T10:40:20Z", "updatedAt": "2015-06-04T10:40:20Z",
               "taskDefinitions": [task(1, "First review", "TRACK_START", 5, 1),
                                   task(2, "Escalate to Management Team", "LAST_TASK", 10, 2)]}),
        json!({"id": 4, "description": "Sales follow-up", "tag": null, "captureRule": "OPPORTUNITY",
               "direction": "START_DATE", "createdAt": "2016-01-04T10:40:20Z", "updatedAt": "2019-03-04T10:40:20Z",
               "taskDefinitions": [task(3, "Send proposal", "TRACK_START", 1, 1),
                                   task(4, "Call back", "LAST_TASK", 7, 2),
                                   task(5, "Close", "LAST_TASK", 14, 3)]}),
        json!({"id": 5, "description": "Renewal", "tag": "renewal", "captureRule": "OPPORTUNITY",
               "direction": "END_DATE", "createdAt": "2017-01-04T10:40:20Z", "updatedAt": "2017-01-04T10:40:20Z",
               "taskDefinitions": [task(6, "Renewal reminder", "TRACK_START", 30, 1)]}),
    ]
}

fn rest_hooks(users: &[Value]) -> Vec<Value> {
    ["party/created", "opportunity/updated", "task/completed"]
        .iter()
        .enumerate()
        .map(|(i, event)| {
            json!({"id": 100 + i as i64, "event": event, "targetUrl": format!("https://hooks.example.com/{i}"),
                   "embed": "fields,tags,owner", "batched": i % 2 == 0, "description": null,
                   "user": nested_user(&users[0], false), "clientId": 7,
                   "createdAt": "2023-01-01T00:00:00Z", "updatedAt": "2023-01-01T00:00:00Z"})
        })
        .collect()
}
