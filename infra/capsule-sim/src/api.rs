//! The `/api/v2` endpoints. One dispatcher matches the path segments, so the whole surface
//! of the simulated API reads top to bottom in [`dispatch`].

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::config::LinkStyle;
use crate::dataset::{Account, Entity, Stored};

/// Keys present only when asked for with `embed`: on parties, opportunities and kases, and
/// `memberships` on teams.
const EMBED_ONLY: [&str; 4] = ["tags", "fields", "missingImportantFields", "memberships"];

/// Largest `perPage` accepted (per-entity entries: 50, per the current docs).
const MAX_PER_PAGE: usize = 100;
const MAX_PER_PAGE_ENTITY_ENTRIES: usize = 50;
const DEFAULT_PER_PAGE: usize = 50;

/// A JSON error answer in Capsule's shape: `{"message": ...}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Could not find resource")
}

/// Capsule's 422: `{"message": "Validation Failed", "errors": [{message, resource, field}]}`.
pub(crate) fn unprocessable(resource: &str, field: &str, message: &str) -> Response {
    let body = json!({"message": "Validation Failed",
                      "errors": [{"message": message, "resource": resource, "field": field}]});
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

/// The query parameters a list request may carry, validated.
#[derive(Debug)]
pub struct ListQuery {
    raw: Vec<(String, String)>,
    page: usize,
    per_page: usize,
    since: Option<DateTime<Utc>>,
    embed: BTreeSet<String>,
}

impl ListQuery {
    fn param(&self, name: &str) -> Option<&str> {
        self.raw.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn embeds(&self, what: &str) -> bool {
        self.embed.contains(what)
    }
}

/// A rejected query parameter: which one and why (answered as a 422).
pub struct InvalidParam {
    field: &'static str,
    message: String,
}

/// Parses `page`, `perPage`, `since` and `embed`; a bad value names the parameter.
pub fn parse_query(raw: Vec<(String, String)>, max_per_page: usize) -> Result<ListQuery, InvalidParam> {
    let unprocessable = |field: &'static str, message: &str| InvalidParam { field, message: message.to_string() };
    let get = |name: &str| raw.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let page = match get("page") {
        None => 1,
        Some(v) => match v.parse::<usize>() {
            Ok(p) if p >= 1 => p,
            _ => return Err(unprocessable("page", "page must be a positive integer")),
        },
    };
    let per_page = match get("perPage") {
        None => DEFAULT_PER_PAGE.min(max_per_page),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max_per_page).contains(&n) => n,
            _ => {
                return Err(unprocessable("perPage", &format!("perPage must be between 1 and {max_per_page}")));
            }
        },
    };
    let since = match get("since") {
        None => None,
        Some(v) => match DateTime::parse_from_rfc3339(&v) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => return Err(unprocessable("since", "since must be in ISO8601 format")),
        },
    };
    let embed = get("embed")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    Ok(ListQuery { raw, page, per_page, since, embed })
}

/// Everything a list answer needs besides the data.
pub struct ListContext<'a> {
    pub base_url: &'a str,
    pub path: &'a str,
    pub link_style: LinkStyle,
}

impl ListContext<'_> {
    fn next_link(&self, q: &ListQuery) -> String {
        let next = q.page + 1;
        let query = match self.link_style {
            LinkStyle::PageOnly => format!("page={next}"),
            LinkStyle::Full => {
                let mut pairs = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in q.raw.iter().filter(|(k, _)| k != "page") {
                    pairs.append_pair(k, v);
                }
                pairs.append_pair("page", &next.to_string());
                pairs.finish()
            }
        };
        format!("<{}{}?{}>; rel=\"next\"", self.base_url, self.path, query)
    }
}

/// One page of `items` under `envelope`, with `Link: rel="next"` when more follow.
fn page<I>(
    ctx: &ListContext,
    q: &ListQuery,
    envelope: &str,
    items: impl Iterator<Item = I>,
    shape: impl Fn(I) -> Value,
    extra: Option<(&str, Vec<Value>)>,
) -> Response {
    respond(ctx, q, envelope, items.skip((q.page - 1) * q.per_page), shape, extra)
}

/// The page whose first record `from` yields.
fn respond<I>(
    ctx: &ListContext,
    q: &ListQuery,
    envelope: &str,
    from: impl Iterator<Item = I>,
    shape: impl Fn(I) -> Value,
    extra: Option<(&str, Vec<Value>)>,
) -> Response {
    let mut window: Vec<Value> = from.take(q.per_page + 1).map(shape).collect();
    let more = window.len() > q.per_page;
    window.truncate(q.per_page);
    let mut body = Map::new();
    body.insert(envelope.to_string(), Value::Array(window));
    if let Some((key, values)) = extra.filter(|(_, v)| !v.is_empty() && q.page == 1) {
        body.insert(key.to_string(), Value::Array(values));
    }
    with_next_link(axum::Json(Value::Object(body)).into_response(), ctx, q, more)
}

/// How a stored record is answered.
#[derive(Clone, Copy)]
enum RecordShape<'q> {
    /// As stored: its text is copied into the page, nothing parsed.
    Stored,
    /// Without the embed-only keys the request did not ask for.
    Embedded(&'q ListQuery),
}

/// The page of stored records whose first record `from` yields, written as text.
fn respond_stored<'a>(
    ctx: &ListContext,
    q: &ListQuery,
    envelope: &str,
    from: impl Iterator<Item = &'a Stored>,
    shape: RecordShape,
) -> Response {
    let mut window: Vec<&Stored> = from.take(q.per_page + 1).collect();
    let more = window.len() > q.per_page;
    window.truncate(q.per_page);
    let mut body = Vec::with_capacity(window.len() * 1024 + 64);
    body.push(b'{');
    serde_json::to_writer(&mut body, envelope).expect("writing to memory");
    body.extend_from_slice(b":[");
    for (i, record) in window.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match shape {
            RecordShape::Stored => record.write_json(&mut body),
            RecordShape::Embedded(q) => record.write_json_without(&mut body, |key| not_embedded(q, key)),
        }
    }
    body.extend_from_slice(b"]}");
    let response = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    with_next_link(response, ctx, q, more)
}

/// Adds `Link: rel="next"` when more records follow.
fn with_next_link(mut response: Response, ctx: &ListContext, q: &ListQuery, more: bool) -> Response {
    if more && let Ok(link) = HeaderValue::from_str(&ctx.next_link(q)) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// The cache key of a listing: its path and query, without `page`.
fn listing_key(ctx: &ListContext, q: &ListQuery) -> String {
    let mut pairs: Vec<String> = q.raw.iter().filter(|(k, _)| k != "page").map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    format!("{}?{}", ctx.path, pairs.join("&"))
}

/// A page of a big collection: the listing's ids are computed on its first page and cached
/// (until the account changes), so a page is found by position and costs what it holds.
fn page_listed(
    ctx: &ListContext,
    q: &ListQuery,
    (envelope, account, records): (&str, &Account, &BTreeMap<i64, Stored>),
    ids: impl FnOnce() -> Vec<i64>,
    shape: RecordShape,
) -> Response {
    let ids = account.listings.get_or_insert(listing_key(ctx, q), ids);
    let first = ((q.page - 1) * q.per_page).min(ids.len());
    let from = ids[first..].iter().filter_map(|id| records.get(id));
    respond_stored(ctx, q, envelope, from, shape)
}

/// Ids of `records` changed since `since` (all without it), ascending.
fn ids_changed_since(records: &BTreeMap<i64, Stored>, since: Option<DateTime<Utc>>) -> Vec<i64> {
    records.iter().filter(|(_, r)| since.is_none_or(|s| r.updated > s)).map(|(id, _)| *id).collect()
}

/// Drops embed-only keys the request did not ask for.
fn embed_shape(q: &ListQuery) -> impl Fn(Value) -> Value + '_ {
    move |mut v| {
        if let Value::Object(map) = &mut v {
            map.retain(|key, _| !not_embedded(q, key));
        }
        v
    }
}

/// An embed-only key the request did not ask for.
fn not_embedded(q: &ListQuery, key: &str) -> bool {
    EMBED_ONLY.contains(&key) && !q.embeds(key)
}

fn same(v: &Value) -> Value {
    v.clone()
}

fn id_of(segment: &str) -> Option<i64> {
    segment.parse().ok()
}

/// Answers one GET below `/api/v2`. `path` starts with `/`.
/// `hooks`: the REST hooks subscribed through the API, listed after the account's own.
pub fn dispatch(account: &Account, ctx: &ListContext, raw_query: Vec<(String, String)>, hooks: &[Value]) -> Response {
    let segments: Vec<&str> = ctx.path.trim_matches('/').split('/').collect();
    let max = match segments.as_slice() {
        [_, _, "entries"] => MAX_PER_PAGE_ENTITY_ENTRIES,
        _ => MAX_PER_PAGE,
    };
    let resource = segments.first().copied().unwrap_or("");
    let unprocessable = |field: &str, message: &str| unprocessable(resource, field, message);
    let q = match parse_query(raw_query, max) {
        Ok(q) => q,
        Err(invalid) => return unprocessable(invalid.field, &invalid.message),
    };
    let entity = |s: &str| Entity::from_path(s);
    match segments.as_slice() {
        [e] if entity(e).is_some() => {
            let records = account.entity(entity(e).unwrap());
            let ids = || ids_changed_since(records, q.since);
            page_listed(ctx, &q, (e, account, records), ids, RecordShape::Embedded(&q))
        }
        [e, "deleted"] if entity(e).is_some() => {
            let entity = entity(e).unwrap();
            let Some(since) = q.since else {
                return unprocessable("since", "since is required");
            };
            let restricted: Vec<Value> =
                account.restricted[&entity].iter().filter(|t| t.at > since).map(|t| t.body.clone()).collect();
            let deleted = account.deleted[&entity].iter().filter(|t| t.at > since).map(|t| &t.body);
            page(ctx, &q, e, deleted, same, Some((entity.restricted_key(), restricted)))
        }
        [e, "fields", "definitions"] if entity(e).is_some() => {
            page(ctx, &q, "definitions", account.reference().field_definitions[&entity(e).unwrap()].iter(), same, None)
        }
        [e, "tags"] if entity(e).is_some() => {
            page(ctx, &q, "tags", account.reference().tags[&entity(e).unwrap()].iter(), same, None)
        }
        ["parties", id, "people"] => {
            let Some(org) = id_of(id).filter(|id| account.entity(Entity::Parties).contains_key(id)) else {
                return not_found();
            };
            let people = account
                .entity(Entity::Parties)
                .values()
                .map(Stored::body)
                .filter(move |b| b["organisation"]["id"].as_i64() == Some(org));
            page(ctx, &q, "parties", people, embed_shape(&q), None)
        }
        [e, id, "entries"] if entity(e).is_some() => {
            let entity = entity(e).unwrap();
            let Some(id) = id_of(id).filter(|id| account.entity(entity).contains_key(id)) else {
                return not_found();
            };
            let key = match entity {
                Entity::Parties => "party",
                Entity::Opportunities => "opportunity",
                Entity::Kases => "kase",
            };
            let entries = newest_first(account).map(Stored::body).filter(move |b| b[key]["id"].as_i64() == Some(id));
            page(ctx, &q, "entries", entries, |b| b, None)
        }
        [e @ ("opportunities" | "kases"), id, "tracks"] => {
            let entity = entity(e).unwrap();
            let Some(id) = id_of(id).filter(|id| account.entity(entity).contains_key(id)) else {
                return not_found();
            };
            let tracks =
                account.tracks.values().filter(move |t| t.parent == entity && t.parent_id == id).map(|t| &t.record);
            respond_stored(ctx, &q, "tracks", tracks.skip((q.page - 1) * q.per_page), RecordShape::Stored)
        }
        [e, id] if entity(e).is_some() => {
            let entity = entity(e).unwrap();
            match id_of(id).and_then(|id| account.entity(entity).get(&id)) {
                Some(r) => single(singular(entity), embed_shape(&q)(r.body())),
                None => not_found(),
            }
        }
        ["entries"] => {
            let order = || account.newest_entries().collect();
            page_listed(ctx, &q, ("entries", account, &account.entries), order, RecordShape::Stored)
        }
        ["tasks"] => {
            let statuses: BTreeSet<String> = match q.param("status") {
                None => BTreeSet::from(["OPEN".to_string()]),
                Some(list) => {
                    let wanted: BTreeSet<String> = list.split(',').map(|s| s.trim().to_uppercase()).collect();
                    if let Some(bad) = wanted.iter().find(|s| !["OPEN", "COMPLETED", "PENDING"].contains(&s.as_str())) {
                        return unprocessable(
                            "status",
                            &format!("status {bad} is not one of open, completed, pending"),
                        );
                    }
                    wanted
                }
            };
            let ids = || {
                let status = |r: &Stored| r.read::<TaskStatus>().status.is_some_and(|s| statuses.contains(&s));
                account.tasks.iter().filter(|(_, r)| status(r)).map(|(id, _)| *id).collect()
            };
            page_listed(ctx, &q, ("tasks", account, &account.tasks), ids, RecordShape::Stored)
        }
        ["tasks", id] => match id_of(id).and_then(|id| account.tasks.get(&id)) {
            Some(r) => single("task", r.body()),
            None => not_found(),
        },
        ["tracks"] => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        ["tracks", id] => match id_of(id).and_then(|id| account.tracks.get(&id)) {
            Some(t) => single("track", t.record.body()),
            None => not_found(),
        },
        ["trackdefinitions"] => {
            let rule = match q.param("type").unwrap_or("all") {
                "all" => None,
                "kases" => Some("CASEFILE"),
                "opportunities" => Some("OPPORTUNITY"),
                _ => return unprocessable("type", "type must be one of all, kases, opportunities"),
            };
            let defs = account
                .reference()
                .track_definitions
                .iter()
                .filter(move |d| rule.is_none_or(|r| d["captureRule"] == r));
            page(ctx, &q, "trackDefinitions", defs, same, None)
        }
        ["teams"] => page(ctx, &q, "teams", account.reference().teams.iter(), |t| embed_shape(&q)(t.clone()), None),
        ["users"] => page(ctx, &q, "users", account.reference().users.iter(), same, None),
        ["lostreasons"] => page(ctx, &q, "lostReasons", account.reference().lost_reasons.iter(), same, None),
        ["pipelines"] => {
            let include_deleted = q.param("includeDeleted") == Some("true");
            let pipelines =
                account.reference().pipelines.iter().filter(move |p| include_deleted || !p.deleted).map(|p| &p.body);
            page(ctx, &q, "pipelines", pipelines, same, None)
        }
        ["pipelines", id, "milestones"] => {
            let Some(pid) = id_of(id).filter(|id| account.reference().pipelines.iter().any(|p| p.body["id"] == *id))
            else {
                return not_found();
            };
            let milestones = account.reference().milestones.iter().filter(move |(p, _)| *p == pid).map(|(_, m)| m);
            page(ctx, &q, "milestones", milestones, same, None)
        }
        ["milestones"] => {
            // Legacy: the oldest active pipeline only, without the `pipeline` reference.
            let oldest =
                account.reference().pipelines.iter().filter(|p| !p.deleted).filter_map(|p| p.body["id"].as_i64()).min();
            let milestones =
                account.reference().milestones.iter().filter(move |(p, _)| Some(*p) == oldest).map(|(_, m)| m);
            let without_pipeline = |m: &Value| {
                let mut m = m.clone();
                if let Value::Object(map) = &mut m {
                    map.remove("pipeline");
                }
                m
            };
            page(ctx, &q, "milestones", milestones, without_pipeline, None)
        }
        ["categories"] => page(ctx, &q, "categories", account.reference().categories.iter(), same, None),
        ["activitytypes"] => page(ctx, &q, "activityTypes", account.reference().activity_types.iter(), same, None),
        ["countries"] => page(ctx, &q, "countries", account.reference().countries.iter(), same, None),
        ["currencies"] => page(ctx, &q, "currencies", account.reference().currencies.iter(), same, None),
        ["resthooks"] => page(ctx, &q, "restHooks", account.reference().rest_hooks.iter().chain(hooks), same, None),
        ["resthooks", id] => {
            let mut all = account.reference().rest_hooks.iter().chain(hooks);
            match all.find(|h| id_of(id).is_some_and(|id| h["id"].as_i64() == Some(id))) {
                Some(hook) => single("restHook", hook.clone()),
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

fn singular(entity: Entity) -> &'static str {
    match entity {
        Entity::Parties => "party",
        Entity::Opportunities => "opportunity",
        Entity::Kases => "kase",
    }
}

fn single(key: &str, body: Value) -> Response {
    axum::Json(json!({ key: body })).into_response()
}

/// The global entries feed order: newest `entryAt` first.
fn newest_first(account: &Account) -> impl Iterator<Item = &Stored> {
    account.newest_entries().filter_map(|id| account.entries.get(&id))
}

/// A task's status, read without building the task.
#[derive(serde::Deserialize)]
struct TaskStatus {
    status: Option<String>,
}
