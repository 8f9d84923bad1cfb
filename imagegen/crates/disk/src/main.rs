//! `kubeboot-disk`: builds disk images from an imagegen output directory
//! (the same code `imagegen build --format` runs). Exit codes: 0 success,
//! 1 build failure, 2 bad arguments.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Builds bootable disk images (raw GPT for UEFI + BIOS, qcow2, vmdk, vdi,
/// vhd, aws) from an imagegen output directory.
#[derive(Parser, Debug)]
#[command(name = "kubeboot-disk", version)]
struct Cli {
    /// imagegen output directory (vmlinuz, initramfs.img, manifest.json).
    image_dir: PathBuf,
    /// Comma-separated formats: raw, qcow2, vmdk, vdi, vhd, aws.
    #[arg(long, default_value = "raw", value_parser = disk::convert::parse_list)]
    format: Vec<Vec<disk::Format>>,
    /// Disk size (for example 4G); default: the smallest that fits.
    #[arg(long, value_parser = disk::convert::parse_size)]
    disk_size: Option<u64>,
    /// Output directory (default: the image directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("kubeboot-disk: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut formats: Vec<disk::Format> = cli.format.into_iter().flatten().collect();
    formats.sort();
    formats.dedup();
    let opts = disk::Options {
        out_dir: cli.out.unwrap_or_else(|| cli.image_dir.clone()),
        image_dir: cli.image_dir,
        formats,
        disk_size: cli.disk_size,
    };
    let built = disk::build(&opts)
        .with_context(|| format!("building disk images from {}", opts.image_dir.display()))?;
    for (path, size) in &built.files {
        println!("{} {size}", path.display());
    }
    for (what, secs) in &built.timings {
        println!("time {what} {secs:.2}s");
    }
    Ok(())
}
