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
        eprintln!("kubeboot-disk: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: the disk crate's errors print
/// their source in their own message and also return it as `source`. The
/// same rule as `imagegen::cli::error_text` (imagegen depends on this crate,
/// not the other way round).
fn error_text(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        match parts.last_mut() {
            Some(last) if text.starts_with(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    parts.join(": ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_says_the_cause_once() {
        let e = anyhow::Error::new(disk::Error::Io {
            what: "writing",
            path: "out/master/disk.raw".into(),
            source: std::io::Error::from_raw_os_error(28),
        })
        .context("building disk images in out/master");
        assert_eq!(
            error_text(&e),
            "building disk images in out/master: writing out/master/disk.raw: No space left on \
             device (os error 28)"
        );
    }
}
