//! `capsule-sim`: the Capsule API simulator as a standalone server.
//! Prints its base URL as the first line of stdout, then serves until Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use capsule_sim::{LinkStyle, SimConfig};
use clap::Parser;

/// mimalloc: generating a million-party account with glibc's malloc spent most of its time in
/// the allocator's bins (short-lived `Value` trees: every record is made as one, at generation
/// and again on every read).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve a simulated Capsule CRM API v2 account on loopback.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The Bearer token clients must send.
    #[arg(long, env = "CAPSULE_SIM_TOKEN", default_value = "demo-token")]
    token: String,
    /// Seed of the generated account.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of parties; other collections scale with it.
    #[arg(long, default_value_t = 500)]
    parties: usize,
    /// Requests allowed per rate-limit window.
    #[arg(long, default_value_t = 4000)]
    rate_limit: u32,
    /// Rate-limit window length in seconds.
    #[arg(long, default_value_t = 3600)]
    rate_window_secs: u64,
    /// How next-page links are written.
    #[arg(long, value_enum, default_value_t = LinkStyle::PageOnly)]
    link_style: LinkStyle,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let config = SimConfig {
        listen: args.listen,
        token: args.token,
        seed: args.seed,
        parties: args.parties,
        rate_limit: args.rate_limit,
        rate_window: Duration::from_secs(args.rate_window_secs),
        link_style: args.link_style,
    };
    let sim = capsule_sim::start(config).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", sim.base_url())?;
    stdout.flush()?;
    eprintln!("capsule-sim: admin API at {}/_admin (stats, faults, mutate, counts); Ctrl-C stops", sim.root_url());
    tokio::signal::ctrl_c().await?;
    sim.stop().await;
    Ok(())
}
