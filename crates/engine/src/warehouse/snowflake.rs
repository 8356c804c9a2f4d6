//! Snowflake: a stage over the output (S3 through a storage integration, or an internal stage
//! the local files are copied to), raw tables, and a `load.sql` of `COPY INTO` statements —
//! idempotent per file through Snowflake's load metadata, so running it again loads only new
//! files. `COPY` reads a whole prefix, so it can land the files of a run that has not committed
//! (or never will); the views read only runs whose manifest `<integration>__runs` holds.

use super::model::{Kit, KitTable};
use super::views::{self, Dialect};
use super::{KitFile, literal};
use capsule_core::catalog::ColumnType;

struct Snowflake;

impl Dialect for Snowflake {}

fn type_of(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "NUMBER(38, 0)",
        ColumnType::String => "VARCHAR",
        ColumnType::Record => "VARIANT",
        ColumnType::Timestamp => "TIMESTAMP_TZ",
        ColumnType::Date => "DATE",
        ColumnType::Boolean => "BOOLEAN",
    }
}

/// `$1:field` cast to the column's type (records stay VARIANT).
fn extract(name: &str, ty: ColumnType) -> String {
    match ty {
        ColumnType::Record => format!("$1:{name}"),
        _ => format!("$1:{name}::{}", type_of(ty).replace(' ', "")),
    }
}

pub(super) fn kit(kit: &Kit<'_>) -> Vec<KitFile> {
    let d = Snowflake;
    let runs = d.ident(&views::runs_table(kit));
    let stage = d.ident(&format!("{}_stage", kit.integration.replace('-', "_")));
    let header = format!(
        "-- capsule-sync warehouse kit for Snowflake, integration `{}`, reading {}.\n\n",
        kit.integration,
        kit.location.as_str()
    );
    let mut setup = header.clone();
    if kit.location.is_s3() {
        setup.push_str(&format!(
            "-- Needs a storage integration `capsule_s3` allowed to read this location.\n\
             CREATE STAGE IF NOT EXISTS {stage} URL = {} STORAGE_INTEGRATION = capsule_s3 FILE_FORMAT = (TYPE = JSON);\n",
            literal(&format!("{}/", kit.location.as_str()))
        ));
    } else {
        setup.push_str(&format!(
            "-- An internal stage: copy the output into it keeping its paths, e.g.\n\
             --   snow stage copy {} @{} --recursive\n\
             CREATE STAGE IF NOT EXISTS {stage} FILE_FORMAT = (TYPE = JSON);\n",
            kit.location.as_str(),
            stage.trim_matches('"')
        ));
    }
    setup.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {runs} (table_name VARCHAR, run_id VARCHAR, extracted_at TIMESTAMP_TZ, \"rows\" NUMBER(38, 0), manifest VARCHAR, loaded_at TIMESTAMP_TZ);\n"
    ));
    for table in kit.tables {
        let columns: Vec<String> =
            table.columns.iter().map(|c| format!("  {} {}", d.ident(c.name), type_of(c.ty))).collect();
        setup.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{},\n  \"dt\" DATE,\n  \"_file\" VARCHAR\n);\n",
            d.ident(&table.raw),
            columns.join(",\n")
        ));
    }
    let mut load = header.clone();
    load.push_str(&format!(
        "-- Published manifests (not `.pending`, `.parents` or `.redshift`): the committed runs.\n\
         COPY INTO {runs} (table_name, run_id, extracted_at, \"rows\", manifest, loaded_at)\n\
         FROM (SELECT $1:table::VARCHAR, $1:run_id::VARCHAR, $1:extracted_at::TIMESTAMP_TZ, $1:rows::NUMBER(38,0), METADATA$FILENAME, CURRENT_TIMESTAMP() FROM @{stage}/_meta/{}/runs/)\n\
         PATTERN = '.*/runs/[^/]+/[a-z_]+[.]json';\n",
        kit.integration
    ));
    for table in kit.tables {
        load.push_str(&copy_table(&d, kit, table, &stage));
    }
    let mut view_sql = header;
    for table in kit.tables {
        view_sql.push_str(&views::current_view(&d, kit, table));
    }
    vec![
        KitFile { name: "setup.sql".into(), body: setup },
        KitFile { name: "load.sql".into(), body: load },
        KitFile { name: "views.sql".into(), body: view_sql },
    ]
}

fn copy_table(d: &Snowflake, kit: &Kit<'_>, table: &KitTable, stage: &str) -> String {
    let names: Vec<String> = table.columns.iter().map(|c| d.ident(c.name)).collect();
    let values: Vec<String> = table.columns.iter().map(|c| extract(c.name, c.ty)).collect();
    format!(
        "COPY INTO {} ({}, \"dt\", \"_file\")\n\
         FROM (SELECT {}, TO_DATE(REGEXP_SUBSTR(METADATA$FILENAME, 'dt=([0-9-]+)', 1, 1, 'e')), METADATA$FILENAME FROM @{stage}/{}/{}/)\n\
         PATTERN = '.*part-[0-9]+[.]ndjson([.]gz)?';\n",
        d.ident(&table.raw),
        names.join(", "),
        values.join(", "),
        kit.integration,
        table.spec.name
    )
}
