//! The account's reference data: users, teams, definitions, pipelines, lookups. Small, fixed
//! for a seed and size, and never changed by mutations; records copy from it as they are made.

use std::collections::BTreeMap;

use chrono::Duration;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::generate::dataset_epoch;
use super::names::*;
use super::{Entity, Pipeline, timestamp};

/// Everything an account holds besides its records.
#[derive(Debug, Default)]
pub struct Reference {
    pub users: Vec<Value>,
    pub teams: Vec<Value>,
    pub field_definitions: BTreeMap<Entity, Vec<Value>>,
    pub tags: BTreeMap<Entity, Vec<Value>>,
    pub lost_reasons: Vec<Value>,
    pub pipelines: Vec<Pipeline>,
    /// Milestones with the id of their pipeline.
    pub milestones: Vec<(i64, Value)>,
    /// The milestones of pipelines that are not archived: where a generated opportunity stands.
    pub open_milestones: Vec<Value>,
    pub categories: Vec<Value>,
    pub activity_types: Vec<Value>,
    pub countries: Vec<Value>,
    pub currencies: Vec<Value>,
    pub rest_hooks: Vec<Value>,
    pub track_definitions: Vec<Value>,
}

impl Reference {
    /// The reference data of an account of `parties` parties (users grow with it, 3 to 25).
    pub(crate) fn new(rng: &mut ChaCha8Rng, parties: usize) -> Reference {
        let users = users(rng, (parties / 1000).clamp(3, 25));
        let (pipelines, milestones) = pipelines();
        let open = |pid: &i64| pipelines.iter().any(|p| !p.deleted && p.body["id"] == *pid);
        let open_milestones = milestones.iter().filter(|(pid, _)| open(pid)).map(|(_, m)| m.clone()).collect();
        Reference {
            teams: teams(&users),
            rest_hooks: rest_hooks(&users),
            users,
            field_definitions: Entity::ALL.into_iter().map(|e| (e, field_definitions(e))).collect(),
            tags: Entity::ALL.into_iter().map(|e| (e, tags(e))).collect(),
            lost_reasons: lost_reasons(),
            pipelines,
            milestones,
            open_milestones,
            categories: categories(),
            activity_types: activity_types(),
            countries: countries(),
            currencies: currencies(),
            track_definitions: track_definitions(),
        }
    }
}

pub(crate) fn picture(initials: &str) -> String {
    format!("https://facehub.appspot.com/default/person?text={initials}&size=100")
}

pub(crate) fn initials(name: &str) -> String {
    name.split_whitespace().filter_map(|w| w.chars().next()).filter(|c| c.is_alphanumeric()).take(2).collect()
}

pub(crate) fn nested_user(u: &Value, real_extras: bool) -> Value {
    let mut nested = json!({"id": u["id"], "username": u["username"], "name": u["name"]});
    if real_extras {
        nested["deleted"] = json!(false);
        nested["pictureURL"] = json!(picture(&initials(u["name"].as_str().unwrap_or("?"))));
    }
    nested
}

fn users(rng: &mut ChaCha8Rng, n: usize) -> Vec<Value> {
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
                    json!(timestamp(dataset_epoch() - Duration::hours(rng.random_range(1..5000))))
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
fn pipelines() -> (Vec<Pipeline>, Vec<(i64, Value)>) {
    let (mut pipelines, mut milestones) = (Vec::new(), Vec::new());
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
        pipelines.push(Pipeline { deleted, body });
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
            milestones.push((pid, m));
            milestone_id += 1;
        }
    }
    (pipelines, milestones)
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
