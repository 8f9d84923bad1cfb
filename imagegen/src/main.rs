//! `imagegen`: thin binary over the library's [`imagegen::cli`].
//!
//! Exit codes: 0 success; 1 the build, lock or inspect failed (the message
//! names what and where); 2 bad command line.
use std::io::IsTerminal;

use clap::Parser;

fn main() {
    let cli = imagegen::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if let Err(e) = imagegen::cli::run(cli) {
        eprintln!("imagegen: error: {}", imagegen::cli::error_text(&e));
        std::process::exit(1);
    }
}
