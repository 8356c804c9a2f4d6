//! Athena: external tables over the files in place (the OpenX JSON SerDe, `dt` by partition
//! projection, so no `MSCK REPAIR` and no crawler), an external table over the manifests with
//! `<integration>__runs` as the committed ones, and the views. Nothing is copied or loaded: the
//! views read only runs whose manifest is published, so an unfinished run's files are ignored.

use super::model::Kit;
use super::views::{self, Dialect};
use super::{KitFile, literal};
use crate::output;
use capsule_core::catalog::ColumnType;

struct Athena;

impl Dialect for Athena {}

/// Hive DDL type. Records are JSON text (`json_extract` reads them).
fn type_of(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "BIGINT",
        ColumnType::String | ColumnType::Record => "STRING",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Date => "DATE",
        ColumnType::Boolean => "BOOLEAN",
    }
}

pub(super) fn kit(kit: &Kit<'_>) -> Vec<KitFile> {
    let d = Athena;
    let prefix = kit.integration.replace('-', "_");
    let header = format!(
        "-- capsule-sync warehouse kit for Athena, integration `{}`, reading {}.\n\
         -- Run each statement in the Athena console or `aws athena start-query-execution`.\n\n",
        kit.integration,
        kit.location.as_str()
    );
    let mut setup = header.clone();
    setup.push_str(&format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{prefix}__manifests` (\n  `table_name` STRING,\n  `run_id` STRING,\n  `extracted_at` TIMESTAMP,\n  `rows` BIGINT\n)\n\
         ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n\
         WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true', 'mapping.table_name' = 'table')\n\
         LOCATION {};\n\n",
        literal(&kit.location.of(&output::manifests_prefix(kit.integration)))
    ));
    for table in kit.tables {
        let location = kit.location.of(&format!("{}/{}/", kit.integration, table.spec.name));
        let columns: Vec<String> = table.columns.iter().map(|c| format!("  `{}` {}", c.name, type_of(c.ty))).collect();
        setup.push_str(&format!(
            "CREATE EXTERNAL TABLE IF NOT EXISTS `{}` (\n{}\n)\nPARTITIONED BY (`dt` DATE)\n\
             ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n\
             LOCATION {}\n\
             TBLPROPERTIES ('projection.enabled' = 'true', 'projection.dt.type' = 'date', 'projection.dt.format' = 'yyyy-MM-dd', \
             'projection.dt.range' = '2000-01-01,NOW', 'projection.dt.interval' = '1', 'projection.dt.interval.unit' = 'DAYS', \
             'storage.location.template' = {});\n\n",
            table.raw,
            columns.join(",\n"),
            literal(&location),
            literal(&format!("{location}dt=${{dt}}/")),
        ));
    }
    let mut view_sql = header;
    view_sql.push_str(&format!(
        "-- The committed runs: published manifests only (not `.pending`, `.parents` or `.redshift`).\n\
         CREATE OR REPLACE VIEW {} AS\nSELECT table_name, run_id, extracted_at, \"rows\", \"$path\" AS manifest\nFROM {}\n\
         WHERE regexp_like(\"$path\", '/runs/[^/]+/[a-z_]+[.]json$');\n",
        d.ident(&views::runs_table(kit)),
        d.ident(&format!("{prefix}__manifests"))
    ));
    for table in kit.tables {
        view_sql.push_str(&views::current_view(&d, kit, table));
    }
    vec![KitFile { name: "setup.sql".into(), body: setup }, KitFile { name: "views.sql".into(), body: view_sql }]
}
