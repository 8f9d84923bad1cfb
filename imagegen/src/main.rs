//! `imagegen` binary (skeleton).
use clap::Parser;

/// Builds node OS images from profiles.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
