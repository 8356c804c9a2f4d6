//! The warehouse kits of the engines that cannot run here — BigQuery, Snowflake, Redshift and
//! Athena — parsed statement by statement with `sqlparser` in each engine's dialect, and
//! compared with golden files (`tests/golden/warehouse/`; `UPDATE_GOLDEN=1` rewrites them after
//! a deliberate change). The DuckDB kit is executed for real in `warehouse_duckdb.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use capsule_core::integration::{Integration, TokenSource};
use capsule_engine::warehouse::{self, Engine, KitFile, Location};
use chrono::{TimeZone, Utc};
use sqlparser::ast::Statement;
use sqlparser::dialect::{BigQueryDialect, Dialect, GenericDialect, HiveDialect, RedshiftSqlDialect, SnowflakeDialect};
use sqlparser::parser::Parser;

fn integration(tables: &[&str]) -> Integration {
    let created = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut i = Integration::new("acme".parse().unwrap(), TokenSource::Env { var: "CAPSULE_TOKEN".into() }, created);
    i.tables = tables.iter().map(|t| t.to_string()).collect();
    i
}

fn kit(engine: Engine, integration: &Integration, location: &str) -> Vec<KitFile> {
    warehouse::kit(engine, integration, &Location::new(location).unwrap()).unwrap()
}

/// Parses a file statement by statement (each ends a line with `;`). One at a time because
/// sqlparser 0.64's Snowflake `COPY INTO` swallows what follows it in the same string.
fn parse(dialect: &dyn Dialect, file: &str, sql: &str) -> Vec<Statement> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            let parsed = Parser::parse_sql(dialect, &current)
                .unwrap_or_else(|e| panic!("{file} does not parse: {e}\n{current}"));
            statements.extend(parsed);
            current.clear();
        }
    }
    assert!(current.trim().lines().all(|l| l.trim().is_empty() || l.trim().starts_with("--")), "{file}: {current}");
    statements
}

/// The SQL `load.sh` sends to Redshift, with its shell variables set as a run would set them.
fn redshift_statements_of(script: &str) -> String {
    let start = script.find("<<SQL\n").expect("load.sh sends SQL in a heredoc") + 6;
    let end = start + script[start..].find("\nSQL\n").expect("the heredoc ends");
    let mut sql = script[start..end].to_string();
    for (var, value) in [
        ("${raw}", "\"acme_parties\""),
        ("${columns}", "\"id\", \"name\""),
        ("${redshift_manifest}", "s3://b/p/_meta/acme/runs/20260101T000000Z-abc123/parties.redshift.json"),
        ("${manifest}", "s3://b/p/_meta/acme/runs/20260101T000000Z-abc123/parties.json"),
        ("${REDSHIFT_IAM_ROLE}", "arn:aws:iam::123456789012:role/capsule-load"),
        ("${gzip}", "GZIP"),
        ("${table}", "parties"),
        ("${run}", "20260101T000000Z-abc123"),
        ("${extracted_at}", "2026-01-01T00:00:00.000Z"),
        ("${rows}", "12"),
    ] {
        sql = sql.replace(var, value);
    }
    assert!(!sql.contains("${"), "every variable is set: {sql}");
    sql
}

/// Statements per file of every engine's kit, parsed in the engine's dialect.
fn parse_kit(engine: Engine, files: &[KitFile]) -> BTreeMap<String, Vec<Statement>> {
    let mut parsed = BTreeMap::new();
    for file in files {
        let name = format!("{engine}/{}", file.name);
        let statements = match (engine, file.name.as_str()) {
            (_, n) if n.ends_with(".json") => {
                let schema: serde_json::Value = serde_json::from_str(&file.body).expect("schema is JSON");
                assert!(schema.as_array().is_some_and(|a| !a.is_empty()), "{name}");
                continue;
            }
            (Engine::Redshift, "load.sh") => {
                let status = std::process::Command::new("bash").arg("-n").arg("-c").arg(&file.body).status().unwrap();
                assert!(status.success(), "{name} is valid bash");
                parse(&RedshiftSqlDialect {}, &name, &redshift_statements_of(&file.body))
            }
            // Executed by DuckDB itself in warehouse_duckdb.rs (sqlparser lacks `SET VARIABLE`).
            (Engine::DuckDb, _) => Vec::new(),
            (Engine::BigQuery, _) => parse(&BigQueryDialect {}, &name, &file.body),
            (Engine::Snowflake, _) => parse(&SnowflakeDialect {}, &name, &file.body),
            (Engine::Redshift, _) => parse(&RedshiftSqlDialect {}, &name, &file.body),
            (Engine::Athena, "setup.sql") => parse(&HiveDialect {}, &name, &file.body),
            // Athena's queries and views are Trino SQL; sqlparser has no Trino dialect.
            (Engine::Athena, _) => parse(&GenericDialect {}, &name, &file.body),
        };
        parsed.insert(name, statements);
    }
    parsed
}

fn views_of(statements: &[Statement]) -> Vec<String> {
    statements
        .iter()
        .filter_map(|s| match s {
            Statement::CreateView(view) => Some(view.name.to_string().replace(['"', '`'], "")),
            _ => None,
        })
        .collect()
}

#[test]
fn every_engines_kit_parses_in_its_dialect_for_all_22_tables() {
    let all = integration(&[]);
    for location in ["s3://capsule-bucket/exports", "/srv/capsule/output"] {
        for &engine in Engine::ALL {
            if engine == Engine::DuckDb {
                continue;
            }
            let parsed = parse_kit(engine, &kit(engine, &all, location));
            let views: Vec<String> = parsed.values().flat_map(|s| views_of(s)).collect();
            let current = views.iter().filter(|v| v.ends_with("_current")).count();
            assert_eq!(current, 22, "{engine}: one current-state view per table: {views:?}");
        }
    }
}

#[test]
fn kits_match_their_golden_files() {
    // Three view rules (incremental with its deleted feed, deleted feed, full snapshot), a union
    // table keyed by (entity, id), and a column selection.
    let mut selection = integration(&["parties", "deleted_parties", "users", "custom_fields"]);
    selection.columns.insert("parties".into(), vec!["name".into(), "updatedAt".into(), "tags".into()]);
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/warehouse");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for &engine in Engine::ALL {
        let files = kit(engine, &selection, "s3://capsule-bucket/exports");
        parse_kit(engine, &files);
        for file in files {
            let path = golden.join(engine.as_str()).join(&file.name);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &file.body).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(file.body.as_str()) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "differ from the kit (UPDATE_GOLDEN=1 after a deliberate change): {stale:?}");
}
