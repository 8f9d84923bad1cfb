//! Resolve (and optionally fetch) packages from the host's default archive,
//! printing timings: a manual check and measurement tool.
//!
//! `cargo run -p debian --example resolve -- [--fetch] [--offline] [--cache DIR] [--suite S] PKG...`

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut fetch = false;
    let mut offline = false;
    let mut cache = PathBuf::from("/tmp/debian-example-cache");
    let mut suite = "bookworm".to_string();
    let mut packages = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fetch" => fetch = true,
            "--offline" => offline = true,
            "--cache" => cache = args.next().ok_or("--cache needs a value")?.into(),
            "--suite" => suite = args.next().ok_or("--suite needs a value")?,
            _ => packages.push(a),
        }
    }
    let url = debian::host_archive_url(&suite)?;
    let spec = debian::ArchiveSpec::new(&url, &suite);
    let cache = debian::Cache::new(cache)?;
    let t = Instant::now();
    let archive = debian::Archive::open(&spec, &cache, offline)?;
    println!(
        "open: {} packages in {:.2?}",
        archive.index().len(),
        t.elapsed()
    );
    let t = Instant::now();
    let res = debian::resolve(archive.index(), &packages, &[])?;
    let bytes: u64 = res.packages.iter().map(|p| p.size).sum();
    println!(
        "resolve: {} packages, {:.1} MB in {:.2?}",
        res.packages.len(),
        bytes as f64 / 1e6,
        t.elapsed()
    );
    for p in &res.packages {
        println!(
            "  {} {} (via {})",
            p.name,
            p.version,
            res.chain(&p.name).join(" -> ")
        );
    }
    if fetch {
        let lock = debian::Lockfile::from_resolution(&archive, &res);
        let t = Instant::now();
        let debs = debian::fetch(lock.packages(), &url, &cache, offline)?;
        println!("fetch: {} files in {:.2?}", debs.len(), t.elapsed());
    }
    Ok(())
}
