//! Current-state views, written once for every engine: each engine supplies how it quotes
//! names ([`Dialect`]); the rules are [`ViewRule`]'s.
//!
//! Every view reads only rows of committed runs (a run is committed when its manifest is in the
//! `<integration>__runs` table), so an engine that lands files before their run commits
//! (Snowflake's `COPY` of a whole prefix, Athena reading files in place) shows the same state.

use super::model::{Kit, KitTable, ViewRule};
use capsule_core::catalog;
use capsule_core::integration::HOOK_RUN_MARK;

/// How an engine spells what the views need.
pub(super) trait Dialect {
    /// A quoted identifier: standard SQL's double quotes unless the engine differs.
    fn ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The runs table of an integration: one row per committed table run.
pub(super) fn runs_table(kit: &Kit<'_>) -> String {
    format!("{}__runs", kit.integration.replace('-', "_"))
}

/// `CREATE OR REPLACE VIEW <table>_current` for one table.
pub(super) fn current_view(d: &dyn Dialect, kit: &Kit<'_>, table: &KitTable) -> String {
    let q = |name: &str| d.ident(name);
    let columns: Vec<String> = table.columns.iter().map(|c| format!("latest.{}", q(c.name))).collect();
    let mut select = columns.join(", ");
    select.push_str(&format!(", latest.{}", q("dt")));
    let ranked = ranked(d, kit, table);
    let mut kept = Vec::new();
    if let ViewRule::Latest { removed: Some(flag), .. } = &table.rule {
        kept.push(format!("NOT coalesce(latest.{}, false)", q(flag)));
    }
    if table.hooked {
        kept.push(format!("NOT coalesce(latest.{}, false)", q("_deleted")));
    }
    let member = (!kept.is_empty()).then(|| kept.join(" AND "));
    let body = match &table.rule {
        ViewRule::Latest { deleted: Some(deleted), .. } => {
            let key = q(table.key()[0]);
            let extracted = q("_extracted_at");
            let member = member.map(|m| format!("\n  AND {m}")).unwrap_or_default();
            format!(
                "WITH latest AS (\n{ranked}\n),\ngone AS (\n  SELECT {key},\n    max(CASE WHEN {del} THEN {extracted} END) AS deleted_seen,\n    max(CASE WHEN {res} THEN {extracted} END) AS restricted_seen\n  FROM {rows} AS d\n  GROUP BY {key}\n)\nSELECT {select},\n  coalesce(gone.restricted_seen >= latest.{extracted}, false) AS {res}\nFROM latest\nLEFT JOIN gone ON gone.{key} = latest.{key}\nWHERE (gone.deleted_seen IS NULL OR gone.deleted_seen < {as_of}){member}",
                as_of = row_as_of(d, table),
                del = q("_deleted"),
                res = q("_restricted"),
                rows = committed_rows(d, kit, deleted, &deleted_table_name(kit, deleted)),
            )
        }
        _ => {
            let member = member.map(|m| format!("\nWHERE {m}")).unwrap_or_default();
            format!("WITH latest AS (\n{ranked}\n)\nSELECT {select}\nFROM latest{member}")
        }
    };
    format!("\nCREATE OR REPLACE VIEW {} AS\n{body};\n", q(&table.view))
}

/// The table's committed rows ranked newest first per key, keeping rank 1.
fn ranked(d: &dyn Dialect, kit: &Kit<'_>, table: &KitTable) -> String {
    let q = |name: &str| d.ident(name);
    let key: Vec<String> = table.key().iter().map(|k| q(k)).collect();
    let mut order = Vec::new();
    match (table.has_updated_at(), table.hooked) {
        // A tombstone has no `updatedAt`: it ranks by when it came, after any change before it.
        (true, true) => order.push(format!(
            "CASE WHEN coalesce({}, false) THEN {} ELSE {} END DESC NULLS LAST",
            q("_deleted"),
            q("_received_at"),
            q("updatedAt")
        )),
        (true, false) => order.push(format!("{} DESC NULLS LAST", q("updatedAt"))),
        (false, _) => {}
    }
    order.push(format!("{} DESC", q("_extracted_at")));
    let rows = committed_rows(d, kit, &table.raw, table.spec.name);
    let snapshot = match (&table.rule, table.hooked) {
        (ViewRule::Snapshot, false) => {
            format!("\n    WHERE {} = ({})", q("_run_id"), latest_run(d, kit, table))
        }
        // The latest snapshot, and what hooks brought after it was taken.
        (ViewRule::Snapshot, true) => format!(
            "\n    WHERE {run} = ({latest})\n       OR ({source} = {hook} AND NOT coalesce({received} <= ({taken}), false))",
            run = q("_run_id"),
            latest = latest_run(d, kit, table),
            source = q("_source"),
            hook = super::literal(catalog::HOOK_SOURCE),
            received = q("_received_at"),
            taken = latest_run_taken(d, kit, table),
        ),
        _ => String::new(),
    };
    format!(
        "  SELECT * FROM (\n    SELECT r.*, row_number() OVER (PARTITION BY {} ORDER BY {}) AS capsule_rank\n    FROM {rows} AS r{snapshot}\n  ) AS ranked\n  WHERE capsule_rank = 1",
        key.join(", "),
        order.join(", ")
    )
}

/// Rows of `raw` whose run is committed.
fn committed_rows(d: &dyn Dialect, kit: &Kit<'_>, raw: &str, table: &str) -> String {
    format!(
        "(SELECT * FROM {} WHERE {} IN (SELECT run_id FROM {} WHERE table_name = {}))",
        d.ident(raw),
        d.ident("_run_id"),
        d.ident(&runs_table(kit)),
        super::literal(table)
    )
}

/// The run id of the table's latest committed batch run (a hook run's id says `-hook`).
fn latest_run(d: &dyn Dialect, kit: &Kit<'_>, table: &KitTable) -> String {
    format!(
        "SELECT run_id FROM {} WHERE table_name = {}{} ORDER BY extracted_at DESC, run_id DESC LIMIT 1",
        d.ident(&runs_table(kit)),
        super::literal(table.spec.name),
        not_hook_run(table),
    )
}

/// When the table's latest committed batch run was taken.
fn latest_run_taken(d: &dyn Dialect, kit: &Kit<'_>, table: &KitTable) -> String {
    format!(
        "SELECT max(extracted_at) FROM {} WHERE table_name = {}{}",
        d.ident(&runs_table(kit)),
        super::literal(table.spec.name),
        not_hook_run(table),
    )
}

/// Leaves hook runs out of a hooked table's runs.
fn not_hook_run(table: &KitTable) -> String {
    match table.hooked {
        true => format!(" AND run_id NOT LIKE {}", super::literal(&format!("%-{HOOK_RUN_MARK}%"))),
        false => String::new(),
    }
}

/// The instant a row shows its record as of: a batch row's extraction, a hook row's `updatedAt`
/// (a delivery sent again late must not outrank a deletion seen since the change it carries).
fn row_as_of(d: &dyn Dialect, table: &KitTable) -> String {
    let extracted = format!("latest.{}", d.ident("_extracted_at"));
    match table.hooked && table.has_updated_at() {
        true => format!(
            "CASE WHEN latest.{} = {} THEN latest.{} ELSE {extracted} END",
            d.ident("_source"),
            super::literal(catalog::HOOK_SOURCE),
            d.ident("updatedAt"),
        ),
        false => extracted,
    }
}

fn deleted_table_name(kit: &Kit<'_>, raw: &str) -> String {
    kit.tables.iter().find(|t| t.raw == raw).map_or_else(String::new, |t| t.spec.name.to_string())
}
