//! `capsule-sync --backend aws doctor --stack NAME`: checks a deployed stack as the operator's
//! credentials see it — its functions (the hook-receiver's URL too), the state table, the bucket, the schedule, and for every
//! integration its API URL, its token's secret, and whether table-sync's role may read that
//! secret (`iam:SimulatePrincipalPolicy`, or the role's own policies where the account does not
//! answer that) — and prints each problem with its fix.

mod checks;
mod hooks;
mod policy;

use clap::Args;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The stack's name: its functions are `<stack>-orchestrator`, `<stack>-table-sync` and
    /// `<stack>-hook-receiver`, its schedule `<stack>-tick`.
    #[arg(long, env = "CAPSULE_STACK")]
    pub stack: String,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Fine(String),
    Wrong { problem: String, fix: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Fine(what) => write!(f, "ok       {what}"),
            Finding::Wrong { problem, fix } => write!(f, "PROBLEM  {problem}\n         fix: {fix}"),
        }
    }
}

pub async fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    let findings = checks::Doctor::new(&args.stack).await.run().await;
    for finding in &findings {
        println!("{finding}");
    }
    let problems = findings.iter().filter(|f| matches!(f, Finding::Wrong { .. })).count();
    anyhow::ensure!(problems == 0, "{problems} problem(s) in stack {}", args.stack);
    println!("stack {}: no problems found", args.stack);
    Ok(())
}
