//! `capsule-sync catalog`: the 22 tables, for people (a table) or machines (`--json`).

use capsule_core::catalog::spec::{NOT_PROVIDED, spec_type_of};
use capsule_core::catalog::{Fetch, TABLES};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

#[derive(Args, Debug)]
pub struct CatalogArgs {
    /// The full catalog as JSON (columns, types, aliases, endpoints).
    #[arg(long)]
    pub json: bool,
    /// How the original integration spec's column names map: aliases, and the columns Capsule API
    /// v2 does not provide, with why.
    #[arg(long)]
    pub spec: bool,
}

/// One spec name and what it is here.
#[derive(serde::Serialize)]
struct SpecMapping {
    table: &'static str,
    spec_column: &'static str,
    /// The column it selects, when there is one.
    column: Option<&'static str>,
    /// Why there is none.
    not_provided: Option<&'static str>,
    /// How its type differs from the spec's.
    #[serde(skip_serializing_if = "Option::is_none")]
    type_differs: Option<String>,
}

fn spec_mappings() -> Vec<SpecMapping> {
    let mut out = Vec::new();
    for table in TABLES {
        for column in table.columns {
            let type_differs = spec_type_of(column.name);
            for spec_column in column.aliases.iter().chain(type_differs.is_some().then_some(&column.name)) {
                out.push(SpecMapping {
                    table: table.name,
                    spec_column,
                    column: Some(column.name),
                    not_provided: None,
                    type_differs: type_differs.clone(),
                });
            }
        }
        for missing in NOT_PROVIDED.iter().filter(|m| m.table == table.name) {
            for name in missing.columns {
                out.push(SpecMapping {
                    table: table.name,
                    spec_column: name,
                    column: None,
                    not_provided: Some(missing.reason),
                    type_differs: None,
                });
            }
        }
    }
    out
}

fn print_spec(json: bool) -> anyhow::Result<()> {
    let mappings = spec_mappings();
    if json {
        println!("{}", serde_json::to_string_pretty(&mappings)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["table", "spec column", "is"]);
    for m in &mappings {
        let is = match (m.column, m.not_provided, &m.type_differs) {
            (Some(column), _, Some(types)) if column == m.spec_column => types.clone(),
            (Some(column), _, _) => format!("alias of `{column}`"),
            (None, Some(reason), _) => format!("not provided: {reason}"),
            (None, None, _) => String::new(),
        };
        t.add_row(vec![m.table.to_string(), m.spec_column.to_string(), is]);
    }
    println!("{t}");
    println!(
        "Every other spec column has the same name and type family here (`capsule-sync catalog --json` lists them all)."
    );
    Ok(())
}

pub fn run(args: CatalogArgs) -> anyhow::Result<()> {
    if args.spec {
        return print_spec(args.json);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(TABLES)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["table", "replication", "primary key", "source", "columns"]);
    for spec in TABLES {
        let source = match spec.fetch {
            Fetch::Listings(listings) => listings.iter().map(|l| l.path).collect::<Vec<_>>().join(" + "),
            Fetch::FanOut { discover, .. } => {
                let child = discover.first().and_then(|d| d.targets.first()).map(|t| t.child_path).unwrap_or("");
                format!("{} per parent", child)
            }
        };
        t.add_row(vec![
            spec.name.to_string(),
            spec.replication.as_str().to_string(),
            spec.primary_key.join(", "),
            source,
            spec.columns.len().to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}
