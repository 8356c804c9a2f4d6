//! `capsule-sync catalog`: the 22 tables, for people (a table) or machines (`--json`).

use capsule_shared::catalog::{Fetch, TABLES};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

#[derive(Args, Debug)]
pub struct CatalogArgs {
    /// The full catalog as JSON (columns, types, aliases, endpoints).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CatalogArgs) -> anyhow::Result<()> {
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
