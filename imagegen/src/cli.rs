//! The command line: `imagegen build | lock | inspect | disk | pins`.
//!
//! Exit codes (see [`run`]): 0 success, 1 the command failed (the message
//! names what and where), 2 usage error (clap).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::build::{self, BuildOptions};
use crate::manifest::{Manifest, INITRAMFS_FILE, MANIFEST_FILE};
use crate::packages;
use crate::profile;

/// Builds immutable, reproducible Kubernetes node OS images (kernel +
/// initramfs) from declarative profiles, without root.
#[derive(Debug, Parser)]
#[command(name = "imagegen", version, about, long_about = None)]
pub struct Cli {
    /// Log level for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "IMAGEGEN_LOG")]
    pub log: String,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a profile into --out DIR: vmlinuz, initramfs.img
    /// (cpio newc + zstd, the root filesystem) and manifest.json.
    Build(BuildArgs),
    /// Resolve a profile's packages against the signed archive and pin
    /// exact versions and SHA256s in a lockfile.
    Lock(LockArgs),
    /// Print an image's manifest and list its initramfs contents.
    Inspect(InspectArgs),
    /// Build disk images (raw GPT for UEFI + BIOS, qcow2, vmdk, vdi, vhd,
    /// aws) from an image directory already built, without rebuilding it
    /// (what `build --format` does after the build).
    Disk(DiskArgs),
    /// Print the Kubernetes pins of a components directory, or of an
    /// upstream release (--version V --profile P), as a profile's
    /// [kubernetes] table that replaces the parent profile's pins (version,
    /// binaries with their SHA256, images with their digests).
    Pins(PinsArgs),
}

/// An output of `build --format`: the kernel + initramfs (always written)
/// or one of the disk crate's formats, the one list of disk formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Kernel + initramfs for direct kernel boot (QEMU -kernel/-initrd, PXE).
    Initramfs,
    /// A disk image format ([`disk::Format`]).
    Disk(disk::Format),
}

/// Every `--format` value, in the order `--help` lists them.
const FORMATS: [Format; 1 + disk::convert::ALL.len()] = {
    let mut all = [Format::Initramfs; 1 + disk::convert::ALL.len()];
    let mut i = 0;
    while i < disk::convert::ALL.len() {
        all[i + 1] = Format::Disk(disk::convert::ALL[i]);
        i += 1;
    }
    all
};

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &FORMATS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            Format::Initramfs => clap::builder::PossibleValue::new("initramfs")
                .help("Kernel + initramfs for direct kernel boot (QEMU -kernel/-initrd, PXE)"),
            Format::Disk(d) => clap::builder::PossibleValue::new(d.name()).help(d.description()),
        })
    }
}

impl Format {
    /// The disk crate's format, None for the initramfs output.
    fn disk(self) -> Option<disk::Format> {
        match self {
            Format::Initramfs => None,
            Format::Disk(d) => Some(d),
        }
    }
}

/// `--kubernetes`: the sources a user chooses by name (the components
/// directory is chosen with `--components-dir DIR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubernetesMode {
    /// Download from upstream; unreachable upstream → build without
    /// Kubernetes, with a warning and the reason recorded.
    Auto,
    /// Download from upstream; any failure fails the build (default).
    Download,
    /// Build without Kubernetes (recorded in the image).
    None,
}

/// Parses `HOST=URL` for `--registry-mirror`.
pub fn parse_mirror(text: &str) -> std::result::Result<(String, String), String> {
    let (host, url) = text.split_once('=').ok_or_else(|| {
        format!("{text:?}: write HOST=URL, e.g. registry.k8s.io=http://127.0.0.1:5000")
    })?;
    if !profile::is_registry_host(host) {
        return Err(format!(
            "{host:?} is not a registry host as written in an image reference (registry.k8s.io, docker.io)"
        ));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url:?} is not an http(s) URL"));
    }
    Ok((host.to_owned(), url.to_owned()))
}

/// The source chosen by `--kubernetes`, `--without-kubernetes` and
/// `--components-dir` (clap refuses their conflicting combinations).
pub fn kubernetes_source(a: &BuildArgs) -> build::KubernetesSource {
    use build::KubernetesSource as S;
    match (a.kubernetes, a.without_kubernetes, &a.components_dir) {
        (Some(KubernetesMode::None), ..) | (_, true, _) => S::None,
        (_, _, Some(dir)) => S::Directory(dir.clone()),
        (Some(KubernetesMode::Auto), ..) => S::Auto,
        (Some(KubernetesMode::Download) | Option::None, ..) => S::Download,
    }
}

/// Options shared by `build` and `lock`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Debian archive URL (default: the profile's, else the host's apt sources).
    #[arg(long, value_name = "URL")]
    pub archive: Option<String>,
    /// Cache directory for indices, .deb files and components
    /// (default: $XDG_CACHE_HOME/kubeboot or ~/.cache/kubeboot).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Use only the cache; fail naming every missing file instead of downloading.
    #[arg(long)]
    pub offline: bool,
}

/// `imagegen build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The profile (for example profiles/master.toml).
    pub profile: PathBuf,
    /// Output directory (default: out/<profile name>). Written under a
    /// temporary name and renamed when complete.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Output formats, comma-separated or repeated. The kernel + initramfs
    /// are always written; disk formats (imagegen/crates/disk) add
    /// disk.raw (built once) and its conversions in the same directory.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "initramfs")]
    pub format: Vec<Format>,
    /// Disk image size for the disk formats (for example 4G; default: the
    /// OS slots plus a minimal data partition, which grows at first boot).
    #[arg(long, value_name = "SIZE", value_parser = disk::convert::parse_size)]
    pub disk_size: Option<u64>,
    /// Lockfile to build from (default: <profile dir>/<name>.lock when it
    /// exists; otherwise packages are resolved against the archive).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
    /// The agent binary baked at /usr/bin/agent
    /// (default: target/release/agent in the workspace; `make build`).
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// Where the Kubernetes payload (binaries, CNI manifest, container
    /// images) comes from. download (default): from upstream (binaries by
    /// URL, images from their registries or --registry-mirror), cached and
    /// verified; any failure fails the build. auto: the same, but when
    /// upstream is unreachable (DNS, connect, timeout; never a checksum or
    /// digest mismatch or an HTTP error) build without Kubernetes, warn,
    /// and record why in the image. none: build without it (recorded).
    #[arg(long, value_enum, value_name = "SOURCE",
          conflicts_with_all = ["without_kubernetes", "components_dir"])]
    pub kubernetes: Option<KubernetesMode>,
    /// Same as --kubernetes none: nothing is fetched, and the image records
    /// present = false with the reason.
    #[arg(long)]
    pub without_kubernetes: bool,
    /// Take the Kubernetes payload from this directory instead of upstream:
    /// binaries named like the component or like the URL's file name, the
    /// images as OCI archives in DIR/images/*.tar; all verified.
    #[arg(long, value_name = "DIR", conflicts_with = "without_kubernetes")]
    pub components_dir: Option<PathBuf>,
    /// Pull a registry's images through a mirror: HOST=URL, for example
    /// registry.k8s.io=http://127.0.0.1:5000 (repeatable; replaces the
    /// profile's [kubernetes] registry_mirrors entry for HOST). The baked
    /// image names stay the original references.
    #[arg(long, value_name = "HOST=URL", value_parser = parse_mirror)]
    pub registry_mirror: Vec<(String, String)>,
    /// Timestamp of every file in the image (default: SOURCE_DATE_EPOCH,
    /// else the profile's source_date_epoch; never the clock).
    #[arg(long, value_name = "N")]
    pub source_date_epoch: Option<u64>,
    /// zstd compression level of the initramfs, 1-22 (higher: smaller and
    /// much slower to build; the output stays reproducible for a level).
    #[arg(long, value_name = "N", default_value_t = build::DEFAULT_ZSTD_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,
    /// No progress bars (plain output, for logs and CI).
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// `imagegen lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The profile.
    pub profile: PathBuf,
    /// Where to write the lockfile (default: <profile dir>/<name>.lock).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// `imagegen inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// An image directory (with manifest.json) or an initramfs file.
    pub image: PathBuf,
    /// Print only the manifest, not the file listing.
    #[arg(long)]
    pub manifest_only: bool,
}

/// `imagegen disk`.
#[derive(Debug, Args)]
pub struct DiskArgs {
    /// imagegen output directory (vmlinuz, initramfs.img, manifest.json).
    pub image_dir: PathBuf,
    /// Comma-separated formats: raw, qcow2, vmdk, vdi, vhd, aws.
    #[arg(long, default_value = "raw", value_parser = disk::convert::parse_list)]
    pub format: Vec<Vec<disk::Format>>,
    /// Disk size (for example 4G); default: the smallest that fits.
    #[arg(long, value_name = "SIZE", value_parser = disk::convert::parse_size)]
    pub disk_size: Option<u64>,
    /// Output directory (default: the image directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `imagegen pins`.
#[derive(Debug, Args)]
pub struct PinsArgs {
    /// The components directory: binaries at its top level, images as OCI
    /// archives in DIR/images/*.tar (layout: imagegen/README.md). Without
    /// it, the pins of upstream release --version, from --profile's.
    #[arg(long, value_name = "DIR", required_unless_present = "version")]
    pub components_dir: Option<PathBuf>,
    /// The Kubernetes version (with a components directory, default: the
    /// kube-apiserver image's tag).
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Upstream release: the profile whose binaries and images are
    /// re-pinned for --version (its crictl, CNI plugins, pause and CoreDNS
    /// tags are carried over).
    /// (default: profiles/master.toml of the workspace).
    #[arg(long, value_name = "FILE", conflicts_with = "components_dir")]
    pub profile: Option<PathBuf>,
    /// Upstream release: where the release binaries and their published
    /// .sha256 files are (<URL>/<version>/bin/linux/amd64/<name>).
    #[arg(long, value_name = "URL", conflicts_with = "components_dir",
          default_value = kubernetes_payload::pins::DEFAULT_RELEASE_URL)]
    pub release_url: String,
    /// Upstream release: resolve a registry's tags through a mirror,
    /// HOST=URL (repeatable; replaces the profile's entry for HOST).
    #[arg(long, value_name = "HOST=URL", value_parser = parse_mirror,
          conflicts_with = "components_dir")]
    pub registry_mirror: Vec<(String, String)>,
    /// Cache directory (resolved manifests are stored there for the build;
    /// default: $XDG_CACHE_HOME/kubeboot or ~/.cache/kubeboot).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// The default cache directory: `$XDG_CACHE_HOME/kubeboot`, else
/// `~/.cache/kubeboot`.
pub fn default_cache(xdg: Option<&str>, home: Option<&str>) -> Result<PathBuf> {
    if let Some(x) = xdg.filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("kubeboot"));
    }
    if let Some(h) = home.filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h).join(".cache").join("kubeboot"));
    }
    bail!("no cache directory: set --cache DIR (neither XDG_CACHE_HOME nor HOME is set)")
}

fn cache_dir(arg: &Option<PathBuf>) -> Result<PathBuf> {
    match arg {
        Some(p) => Ok(p.clone()),
        None => default_cache(
            std::env::var("XDG_CACHE_HOME").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        ),
    }
}

/// The workspace root when run from it or from `target/*/`: the nearest
/// ancestor of the current directory with a `Cargo.toml` declaring
/// `[workspace]`.
fn workspace_root() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) {
            if text.contains("[workspace]") {
                return Some(dir);
            }
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// An error and its causes on one line, each said once. Many error types
/// print their cause in their own message and also return it as their
/// `source` (so code can still inspect it); anyhow's `{:#}` would then print
/// it twice (`No space left on device (os error 28): No space left on
/// device (os error 28)`). A cause whose text is already in the line is left
/// out; a cause that merely extends the previous one (`X` then `X: detail`)
/// replaces it.
pub fn error_text(e: &anyhow::Error) -> String {
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

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(a) => cmd_build(a),
        Command::Lock(a) => cmd_lock(a),
        Command::Inspect(a) => cmd_inspect(a),
        Command::Disk(a) => cmd_disk(a),
        Command::Pins(a) => cmd_pins(a),
    }
}

fn cmd_pins(a: PinsArgs) -> Result<()> {
    let pins = match (&a.components_dir, &a.version) {
        (Some(dir), version) => kubernetes_payload::pins::collect(dir, version.as_deref())?,
        (None, Some(version)) => {
            let path = a.profile.unwrap_or_else(|| {
                workspace_root()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join("profiles/master.toml")
            });
            let profile = crate::profile::load(&path)?;
            let mut mirrors = profile.registry_mirrors.clone();
            mirrors.extend(a.registry_mirror);
            let client =
                kubernetes_payload::registry::Client::new(&cache_dir(&a.cache)?, mirrors, false)?;
            eprintln!(
                "imagegen: pinning Kubernetes {version} from {} (published checksums, digests by tag)",
                path.display()
            );
            kubernetes_payload::pins::collect_upstream(&profile, version, &a.release_url, &client)?
        }
        (None, None) => bail!("give --components-dir DIR or --version V"),
    };
    print!("{}", kubernetes_payload::pins::to_toml(&pins));
    Ok(())
}

fn cmd_build(a: BuildArgs) -> Result<()> {
    let kubernetes = kubernetes_source(&a);
    let mut disk_formats: Vec<disk::Format> = a.format.iter().filter_map(|f| f.disk()).collect();
    disk_formats.sort();
    disk_formats.dedup();
    let agent_bin = match a.agent_bin {
        Some(p) => p,
        None => workspace_root()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("target/release/agent"),
    };
    let opts = BuildOptions {
        profile: a.profile,
        out: a.out,
        lockfile: a.lockfile,
        offline: a.common.offline,
        archive: a.common.archive,
        cache: cache_dir(&a.common.cache)?,
        agent_bin,
        kubernetes,
        registry_mirrors: a.registry_mirror.into_iter().collect(),
        source_date_epoch: a.source_date_epoch,
        env_source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
        progress: !a.no_progress,
        zstd_level: a.zstd_level,
    };
    let summary = build::build(&opts)?;
    print!("{}", build::summary_text(&summary));
    if !disk_formats.is_empty() {
        let built = disk::build(&disk::Options {
            image_dir: summary.out.clone(),
            out_dir: summary.out.clone(),
            formats: disk_formats,
            disk_size: a.disk_size,
        })
        .with_context(|| format!("building disk images in {}", summary.out.display()))?;
        for (path, size) in &built.files {
            println!("  {} ({} MiB)", path.display(), size.div_ceil(1 << 20));
        }
    }
    Ok(())
}

fn cmd_lock(a: LockArgs) -> Result<()> {
    let profile = profile::load(&a.profile)?;
    let cache = packages::open_cache(&cache_dir(&a.common.cache)?)?;
    let url = packages::archive_url(&profile, a.common.archive.as_deref(), None)?;
    let lock = packages::lock(&profile, &url, &cache, a.common.offline)?;
    let path = a
        .lockfile
        .unwrap_or_else(|| build::default_lockfile(&a.profile, &profile.name));
    packages::write_lockfile(&lock, &path)?;
    println!(
        "locked {} packages of profile {} ({} {}) in {}",
        lock.packages().len(),
        profile.name,
        url,
        profile.archive.suite,
        path.display()
    );
    Ok(())
}

fn cmd_disk(a: DiskArgs) -> Result<()> {
    let mut formats: Vec<disk::Format> = a.format.into_iter().flatten().collect();
    formats.sort();
    formats.dedup();
    let opts = disk::Options {
        out_dir: a.out.unwrap_or_else(|| a.image_dir.clone()),
        image_dir: a.image_dir,
        formats,
        disk_size: a.disk_size,
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

fn cmd_inspect(a: InspectArgs) -> Result<()> {
    let (manifest_path, initramfs) = if a.image.is_dir() {
        (a.image.join(MANIFEST_FILE), a.image.join(INITRAMFS_FILE))
    } else {
        let dir = a.image.parent().unwrap_or(Path::new("."));
        (dir.join(MANIFEST_FILE), a.image.clone())
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an imagegen manifest", manifest_path.display()))?;
        writeln!(out, "# {}", manifest_path.display())?;
        writeln!(out, "{}", text.trim_end())?;
        writeln!(
            out,
            "# {} ({}): {} packages, kernel {} ({} modules), kubernetes {}",
            m.profile,
            m.role,
            m.packages.len(),
            m.kernel.release,
            m.kernel.modules_kept.len(),
            if m.kubernetes.present {
                "present".to_owned()
            } else {
                format!("absent: {}", m.kubernetes.reason.unwrap_or_default())
            }
        )?;
    } else if a.image.is_dir() {
        bail!(
            "{} has no {MANIFEST_FILE}: not a complete imagegen image",
            a.image.display()
        );
    }
    if a.manifest_only {
        return Ok(());
    }
    let file = std::fs::File::open(&initramfs)
        .with_context(|| format!("opening {}", initramfs.display()))?;
    let entries = rootfs::cpio::list(file)
        .with_context(|| format!("reading {} as a cpio initramfs", initramfs.display()))?;
    writeln!(out, "# {} ({} entries)", initramfs.display(), entries.len())?;
    for e in &entries {
        writeln!(out, "{}", e.line())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Debug, thiserror::Error)]
    #[error("writing {path}: {source}")]
    struct SaysItsSource {
        path: &'static str,
        source: std::io::Error,
    }

    /// Moved with the `kubeboot-disk` binary (folded into `imagegen disk`):
    /// the disk crate's errors, said once by the same rule.
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

    #[test]
    fn error_text_says_each_cause_once() {
        let full = || std::io::Error::from_raw_os_error(28);
        // A cause printed by its parent's message and returned as its source.
        let e = anyhow::Error::new(SaysItsSource {
            path: "out/master/initramfs.img",
            source: full(),
        });
        assert_eq!(format!("{e:#}").matches("os error 28").count(), 2);
        assert_eq!(
            error_text(&e),
            "writing out/master/initramfs.img: No space left on device (os error 28)"
        );
        // Context that the next cause repeats and extends.
        let e = anyhow::Error::new(full())
            .context("writing the initramfs: No space left on device (os error 28)");
        let e = e.context("writing the initramfs");
        assert_eq!(
            error_text(&e),
            "writing the initramfs: No space left on device (os error 28)"
        );
        // Distinct causes are all kept, in order.
        let e = anyhow::Error::new(full()).context("building disk images in out/master");
        assert_eq!(
            error_text(&e),
            "building disk images in out/master: No space left on device (os error 28)"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_build_option_has_help() {
        let cmd = Cli::command();
        let build = cmd.find_subcommand("build").unwrap();
        for arg in build.get_arguments() {
            if arg.get_id() == "help" || arg.get_id() == "version" {
                continue;
            }
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }

    #[test]
    fn cache_default_prefers_xdg() {
        assert_eq!(
            default_cache(Some("/x"), Some("/h")).unwrap(),
            PathBuf::from("/x/kubeboot")
        );
        assert_eq!(
            default_cache(None, Some("/h")).unwrap(),
            PathBuf::from("/h/.cache/kubeboot")
        );
        assert!(default_cache(None, None).is_err());
    }

    fn source_of(args: &[&str]) -> std::result::Result<build::KubernetesSource, clap::Error> {
        let mut all = vec!["imagegen", "build", "p.toml"];
        all.extend(args);
        match Cli::try_parse_from(all)?.command {
            Command::Build(a) => Ok(kubernetes_source(&a)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn kubernetes_source_choices() {
        use build::KubernetesSource as S;
        assert_eq!(source_of(&[]).unwrap(), S::Download);
        assert_eq!(
            source_of(&["--kubernetes", "download"]).unwrap(),
            S::Download
        );
        assert_eq!(source_of(&["--kubernetes", "auto"]).unwrap(), S::Auto);
        assert_eq!(source_of(&["--kubernetes", "none"]).unwrap(), S::None);
        assert_eq!(source_of(&["--without-kubernetes"]).unwrap(), S::None);
        assert_eq!(
            source_of(&["--components-dir", "/d"]).unwrap(),
            S::Directory(PathBuf::from("/d"))
        );
        for bad in [
            &["--kubernetes", "none", "--components-dir", "/d"][..],
            &["--kubernetes", "auto", "--components-dir", "/d"],
            &["--kubernetes", "none", "--without-kubernetes"],
            &["--kubernetes", "sometimes"],
        ] {
            let err = source_of(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn registry_mirror_is_host_equals_url() {
        assert_eq!(
            parse_mirror("registry.k8s.io=http://127.0.0.1:5000").unwrap(),
            (
                "registry.k8s.io".to_owned(),
                "http://127.0.0.1:5000".to_owned()
            )
        );
        assert!(parse_mirror("registry.k8s.io").is_err());
        assert!(parse_mirror("registry.k8s.io=127.0.0.1:5000").is_err());
        assert!(parse_mirror("http://r=http://m").is_err());
        let Command::Build(a) = Cli::try_parse_from([
            "imagegen",
            "build",
            "p.toml",
            "--registry-mirror",
            "a.example=http://m1",
            "--registry-mirror",
            "docker.io=https://m2",
        ])
        .unwrap()
        .command
        else {
            unreachable!()
        };
        assert_eq!(a.registry_mirror.len(), 2);
    }

    #[test]
    fn without_kubernetes_conflicts_with_components_dir() {
        let r = Cli::try_parse_from([
            "imagegen",
            "build",
            "p.toml",
            "--without-kubernetes",
            "--components-dir",
            "/d",
        ]);
        assert!(r.is_err());
    }
}
