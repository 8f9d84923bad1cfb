//! `agent`: the node agent binary. Thin: parses the command line and calls the library.
use anyhow::Result;
use clap::Parser;

/// The kubeboot node agent.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> Result<()> {
    let _cli = Cli::parse();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    tracing::info!("agent starting");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("idle")]);
    loop {
        std::thread::park();
    }
}
