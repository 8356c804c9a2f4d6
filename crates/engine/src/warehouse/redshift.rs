//! Redshift: raw tables, the views, and `load.sh`, which loads each committed run once with
//! `COPY … MANIFEST` from the Redshift manifest every run writes beside its run manifest
//! (`_meta/<integration>/runs/<run_id>/<table>.redshift.json`), so a load reads exactly the
//! files of a committed run. Redshift reads S3 only.

use super::KitFile;
use super::model::Kit;
use super::views::{self, Dialect};
use capsule_core::catalog::ColumnType;

struct Redshift;

impl Dialect for Redshift {
    fn ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\"").to_ascii_lowercase())
    }
}

/// Redshift folds names to lower case; `COPY … 'auto ignorecase'` matches the files' keys.
fn type_of(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "BIGINT",
        // The longest VARCHAR; longer text is cut (`TRUNCATECOLUMNS`).
        ColumnType::String => "VARCHAR(65535)",
        ColumnType::Record => "SUPER",
        ColumnType::Timestamp => "TIMESTAMPTZ",
        ColumnType::Date => "DATE",
        ColumnType::Boolean => "BOOLEAN",
    }
}

pub(super) fn kit(kit: &Kit<'_>) -> Vec<KitFile> {
    let d = Redshift;
    let runs = d.ident(&views::runs_table(kit));
    let header = format!(
        "-- capsule-sync warehouse kit for Redshift, integration `{}`, reading {}.\n\n",
        kit.integration,
        kit.location.as_str()
    );
    let mut setup = header.clone();
    setup.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {runs} (table_name VARCHAR(64), run_id VARCHAR(64), extracted_at TIMESTAMPTZ, \"rows\" BIGINT, manifest VARCHAR(1024), loaded_at TIMESTAMPTZ);\n"
    ));
    for table in kit.tables {
        let columns: Vec<String> =
            table.columns.iter().map(|c| format!("  {} {}", d.ident(c.name), type_of(c.ty))).collect();
        setup.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{},\n  \"dt\" DATE\n)\nSORTKEY (\"_extracted_at\");\n",
            d.ident(&table.raw),
            columns.join(",\n")
        ));
    }
    let mut view_sql = header;
    for table in kit.tables {
        view_sql.push_str(&views::current_view(&d, kit, table));
    }
    vec![
        KitFile { name: "setup.sql".into(), body: setup },
        KitFile { name: "views.sql".into(), body: view_sql },
        KitFile { name: "load.sh".into(), body: load_script(kit, &runs) },
    ]
}

/// The loader: lists the published manifests, skips runs already in the runs table, and loads
/// each other one in a transaction (COPY, the `dt` partition from the run id, the runs row).
fn load_script(kit: &Kit<'_>, runs: &str) -> String {
    let d = Redshift;
    let location = kit.location.as_str();
    let bucket_root = location.find("://").and_then(|i| location[i + 3..].find('/').map(|j| &location[..i + 3 + j]));
    let bucket_root = bucket_root.unwrap_or(location);
    let mut cases = String::new();
    for table in kit.tables {
        let names: Vec<String> = table.columns.iter().map(|c| d.ident(c.name)).collect();
        cases.push_str(&format!(
            "    {}) raw={}; columns={} ;;\n",
            table.spec.name,
            shell_quote(&d.ident(&table.raw)),
            shell_quote(&names.join(", "))
        ));
    }
    format!(
        r#"#!/usr/bin/env bash
# capsule-sync warehouse kit for Redshift, integration `{integration}`, reading {location}.
# Loads each committed run once. Needs the aws CLI and psql, PGHOST/PGPORT/PGDATABASE/PGUSER (and
# PGPASSWORD) for the cluster, and REDSHIFT_IAM_ROLE: a role the cluster may assume to read the
# bucket. Run setup.sql once first; views.sql after the first load.
set -euo pipefail
: "${{REDSHIFT_IAM_ROLE:?set REDSHIFT_IAM_ROLE to the ARN of a role Redshift can assume to read {location}}}"
loaded=$(psql -XAt -v ON_ERROR_STOP=1 -c 'SELECT manifest FROM {runs}')
aws s3 ls --recursive '{location}/_meta/{integration}/runs/' | awk '{{print $4}}' \
  | grep -E '/runs/[^/]+/[a-z_]+[.]json$' | while read -r key; do
  manifest='{bucket_root}/'"$key"
  if grep -qxF "$manifest" <<<"$loaded"; then continue; fi
  run=$(basename "$(dirname "$key")")
  table=$(basename "$key" .json)
  [[ "$run" =~ ^[A-Za-z0-9-]+$ ]] || {{ echo "unexpected run id in $key" >&2; exit 1; }}
  case "$table" in
{cases}    *) continue ;;
  esac
  body=$(aws s3 cp "$manifest" - </dev/null)
  extracted_at=$(grep -o '"extracted_at":"[^"]*"' <<<"$body" | cut -d'"' -f4)
  rows=$(grep -o '"rows":[0-9]*' <<<"$body" | tail -1 | cut -d: -f2)  # the run's, after its files'
  redshift_manifest="${{manifest%.json}}.redshift.json"
  gzip=""
  if aws s3 cp "$redshift_manifest" - </dev/null | grep -q '[.]gz"'; then gzip="GZIP"; fi
  echo "loading $table run $run" >&2
  psql -X -v ON_ERROR_STOP=1 <<SQL
BEGIN;
COPY ${{raw}} (${{columns}}) FROM '${{redshift_manifest}}' IAM_ROLE '${{REDSHIFT_IAM_ROLE}}' MANIFEST FORMAT AS JSON 'auto ignorecase' ${{gzip}} TIMEFORMAT 'auto' TRUNCATECOLUMNS;
UPDATE ${{raw}} SET "dt" = TO_DATE(LEFT("_run_id", 8), 'YYYYMMDD') WHERE "dt" IS NULL;
INSERT INTO {runs} (table_name, run_id, extracted_at, "rows", manifest, loaded_at) VALUES ('${{table}}', '${{run}}', '${{extracted_at}}', ${{rows}}, '${{manifest}}', GETDATE());
COMMIT;
SQL
done
"#,
        integration = kit.integration,
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
