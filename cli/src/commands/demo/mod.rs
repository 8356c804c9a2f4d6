//! `capsule-sync demo`: the embedded default end to end, with nothing to set up. The simulator
//! it runs is behind the `demo` feature (on by default): `cargo install --path cli
//! --no-default-features` builds a capsule-sync for production that does not carry it.

#[cfg(feature = "demo")]
mod simulated;

use clap::Args;

use super::sync::RunArgs;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Size of the simulated account (parties; every other table scales with it).
    #[arg(long, default_value_t = 2000)]
    pub parties: usize,
    /// Seed of the simulated account.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

#[cfg(feature = "demo")]
pub use simulated::run;

/// Without the simulator there is no demo: say how to get one.
#[cfg(not(feature = "demo"))]
pub async fn run(
    _data_dir: &std::path::Path,
    _backend_args: &crate::backend::BackendArgs,
    _args: DemoArgs,
) -> anyhow::Result<()> {
    anyhow::bail!("this capsule-sync was built without the simulator; build it with `--features demo` to run the demo")
}
