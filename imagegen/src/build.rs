//! The build pipeline (I/O shell): profile → packages → tree → outputs.
//!
//! Order matters for clear failure: everything that can be checked before
//! the long work (profile, agent binary, Kubernetes components, lockfile) is
//! checked first; outputs are staged and renamed into place last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::assemble::{self, Deb, AGENT_PATH};
use crate::bake::{self, InstalledComponent, KubernetesRecord};
use crate::components::{self, sha256_hex, Sources};
use crate::manifest::{
    KernelRecord, Manifest, PackageRecord, Sizes, FORMAT_VERSION, INITRAMFS_FILE, KERNEL_FILE,
    MANIFEST_FILE,
};
use crate::output::{file_sha256, Staging};
use crate::packages;
use crate::profile::{self, Profile};

/// Default zstd level of the initramfs. Measured on the master image (222
/// MiB of cpio): level 3 gives 79 MiB in ~4 s, level 19 gives 64 MiB in
/// ~150 s on one core. The kernel unpacks both at about the same speed, so
/// the default keeps rebuilds fast; `--zstd-level 19` trades build time for
/// size.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Options of `imagegen build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The profile file.
    pub profile: PathBuf,
    /// Output directory (default `out/<profile name>`).
    pub out: Option<PathBuf>,
    /// Lockfile (default `<profile dir>/<name>.lock` when it exists).
    pub lockfile: Option<PathBuf>,
    /// Use the cache only.
    pub offline: bool,
    /// Archive URL override.
    pub archive: Option<String>,
    /// Cache directory.
    pub cache: PathBuf,
    /// The agent binary.
    pub agent_bin: PathBuf,
    /// Build without the Kubernetes components.
    pub without_kubernetes: bool,
    /// Pre-downloaded components.
    pub components_dir: Option<PathBuf>,
    /// `--source-date-epoch`.
    pub source_date_epoch: Option<u64>,
    /// `SOURCE_DATE_EPOCH` from the environment.
    pub env_source_date_epoch: Option<String>,
    /// Show progress bars.
    pub progress: bool,
    /// zstd level (1..=22).
    pub zstd_level: i32,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildSummary {
    /// Final output directory.
    pub out: PathBuf,
    /// The manifest written.
    pub manifest: Manifest,
    /// SHA256 of `manifest.json`.
    pub manifest_sha256: String,
    /// The lockfile used, if any.
    pub lockfile: Option<PathBuf>,
    /// Wall time.
    pub elapsed: Duration,
}

/// The epoch: `--source-date-epoch`, else `SOURCE_DATE_EPOCH`, else the
/// profile's, else the default. Never the clock.
pub fn choose_epoch(cli: Option<u64>, env: Option<&str>, profile: Option<u64>) -> Result<u64> {
    if let Some(e) = cli {
        return Ok(e);
    }
    if let Some(text) = env.filter(|t| !t.is_empty()) {
        return text.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds since 1970")
        });
    }
    Ok(profile.unwrap_or(profile::DEFAULT_SOURCE_DATE_EPOCH))
}

/// The default lockfile of a profile: `<dir>/<name>.lock`.
pub fn default_lockfile(profile_path: &Path, name: &str) -> PathBuf {
    profile_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{name}.lock"))
}

fn bar(progress: bool, len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Runs a build.
pub fn build(opts: &BuildOptions) -> Result<BuildSummary> {
    let started = Instant::now();
    let profile = profile::load(&opts.profile)?;
    let epoch = choose_epoch(
        opts.source_date_epoch,
        opts.env_source_date_epoch.as_deref(),
        profile.source_date_epoch,
    )?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(&profile.name));
    eprintln!(
        "imagegen: building {} ({} role) from {}",
        profile.name,
        profile.role,
        opts.profile.display()
    );

    // Cheap checks first.
    let agent = std::fs::read(&opts.agent_bin).map_err(|e| {
        anyhow::anyhow!(
            "agent binary {}: {e}; build it first with `make build` \
             (cargo build --release -p agent) or pass --agent-bin PATH",
            opts.agent_bin.display()
        )
    })?;
    let (kubernetes, component_files) = kubernetes_components(&profile, opts)?;

    // Packages.
    let cache = packages::open_cache(&opts.cache)?;
    let lock_path = match &opts.lockfile {
        Some(p) => {
            if !p.is_file() {
                bail!(
                    "lockfile {} does not exist; create it with `imagegen lock {} --lockfile {}`",
                    p.display(),
                    opts.profile.display(),
                    p.display()
                );
            }
            Some(p.clone())
        }
        None => Some(default_lockfile(&opts.profile, &profile.name)).filter(|p| p.is_file()),
    };
    let lock = match &lock_path {
        Some(p) => {
            eprintln!("imagegen: using lockfile {}", p.display());
            packages::read_lockfile(p)?
        }
        None => {
            let url = packages::archive_url(&profile, opts.archive.as_deref(), None)?;
            eprintln!(
                "imagegen: no lockfile; resolving against {url} {} (pin with `imagegen lock`)",
                profile.archive.suite
            );
            packages::lock(&profile, &url, &cache, opts.offline)?
        }
    };
    let url = packages::archive_url(&profile, opts.archive.as_deref(), Some(&lock))?;
    let fetched = packages::fetch(&lock, &url, &cache, opts.offline, opts.progress)?;
    let debs: Vec<Deb> = fetched
        .iter()
        .map(|f| Deb {
            name: f.package.name.clone(),
            path: f.path.clone(),
        })
        .collect();

    // Root filesystem.
    let generated = bake::generated(&profile, &kubernetes);
    let pb = bar(opts.progress, debs.len() as u64, "unpacking");
    let mut executables = vec![(AGENT_PATH.to_owned(), agent.clone())];
    executables.extend(component_files);
    let assembled = assemble::assemble(&profile, &debs, &generated, &executables, |name| {
        pb.set_message(name.to_owned());
        pb.inc(1);
    })?;
    pb.finish_and_clear();

    // Outputs.
    let staging = Staging::new(&out)?;
    staging.write(KERNEL_FILE, &assembled.vmlinuz)?;
    let spinner = bar(opts.progress, 1, "packing");
    spinner.set_message(format!(
        "{} entries, zstd -{}",
        assembled.tree.len(),
        opts.zstd_level
    ));
    let stats = {
        let mut w = staging.create(INITRAMFS_FILE)?;
        let stats = rootfs::cpio::write_initramfs(&assembled.tree, epoch, opts.zstd_level, &mut w)
            .context("writing the initramfs")?;
        std::io::Write::flush(&mut w).context("writing the initramfs")?;
        stats
    };
    spinner.finish_and_clear();
    let mut outputs = BTreeMap::new();
    let mut vmlinuz_size = 0;
    for name in [KERNEL_FILE, INITRAMFS_FILE] {
        let (sha, size) = file_sha256(&staging.path(name))?;
        if name == KERNEL_FILE {
            vmlinuz_size = size;
        }
        outputs.insert(name.to_owned(), sha);
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        profile: profile.name.clone(),
        role: profile.role.to_string(),
        profile_files: profile
            .files
            .iter()
            .map(|f| {
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect(),
        format: "initramfs".to_owned(),
        suite: profile.archive.suite.clone(),
        architecture: profile.archive.architecture.clone(),
        source_date_epoch: epoch,
        cmdline: profile.cmdline.clone(),
        kernel: KernelRecord {
            package: profile.kernel_package.clone(),
            release: assembled.kernel_release.clone(),
            modules_kept: assembled.modules_kept.clone(),
        },
        packages: lock
            .packages()
            .iter()
            .map(|p| PackageRecord {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                sha256: p.sha256.clone(),
            })
            .collect(),
        kubernetes,
        agent_sha256: sha256_hex(&agent),
        sizes: Sizes {
            entries: stats.entries as u64,
            initramfs_uncompressed: stats.uncompressed_bytes,
            initramfs_compressed: stats.compressed_bytes,
            vmlinuz: vmlinuz_size,
        },
        outputs,
    };
    let json = manifest.to_json();
    staging.write(MANIFEST_FILE, json.as_bytes())?;
    let out = staging.commit()?;
    Ok(BuildSummary {
        out,
        manifest_sha256: sha256_hex(json.as_bytes()),
        manifest,
        lockfile: lock_path,
        elapsed: started.elapsed(),
    })
}

/// The Kubernetes record and the component files to install.
fn kubernetes_components(
    profile: &Profile,
    opts: &BuildOptions,
) -> Result<(KubernetesRecord, Vec<assemble::Executable>)> {
    if opts.without_kubernetes {
        eprintln!(
            "imagegen: --without-kubernetes: not fetching {} (recorded in the image)",
            profile
                .components
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok((
            KubernetesRecord::absent(profile.kubernetes_version.clone()),
            Vec::new(),
        ));
    }
    let sources = Sources {
        dir: opts.components_dir.as_deref(),
        cache: &opts.cache,
        offline: opts.offline,
    };
    let mut files = Vec::new();
    let mut installed = Vec::new();
    for c in &profile.components {
        let data = components::obtain(c, &sources)?;
        installed.push(InstalledComponent {
            name: c.name.clone(),
            path: c.path.clone(),
            sha256: c.sha256.clone(),
        });
        files.push((c.path.clone(), data));
    }
    Ok((
        KubernetesRecord {
            present: true,
            version: profile.kubernetes_version.clone(),
            reason: None,
            components: installed,
        },
        files,
    ))
}

/// Renders the final summary printed after a build.
pub fn summary_text(s: &BuildSummary) -> String {
    let m = &s.manifest;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut t = String::new();
    t.push_str(&format!(
        "built {} ({}) in {:.1}s\n",
        m.profile,
        m.role,
        s.elapsed.as_secs_f64()
    ));
    t.push_str(&format!(
        "  packages:    {} from {} ({})\n",
        m.packages.len(),
        m.suite,
        s.lockfile
            .as_ref()
            .map_or("resolved now".to_owned(), |p| format!(
                "lockfile {}",
                p.display()
            ))
    ));
    t.push_str(&format!(
        "  kernel:      {} with {} modules kept\n",
        m.kernel.release,
        m.kernel.modules_kept.len()
    ));
    t.push_str(&format!(
        "  kubernetes:  {}\n",
        if m.kubernetes.present {
            format!(
                "present ({})",
                m.kubernetes
                    .components
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!(
                "absent: {}",
                m.kubernetes.reason.clone().unwrap_or_default()
            )
        }
    ));
    t.push_str(&format!(
        "  initramfs:   {} entries, {:.1} MiB uncompressed, {:.1} MiB compressed\n",
        m.sizes.entries,
        mib(m.sizes.initramfs_uncompressed),
        mib(m.sizes.initramfs_compressed)
    ));
    t.push_str(&format!("  epoch:       {}\n", m.source_date_epoch));
    t.push_str("  outputs:\n");
    for (name, sha) in &m.outputs {
        t.push_str(&format!("    {}  {}\n", sha, s.out.join(name).display()));
    }
    t.push_str(&format!(
        "    {}  {}\n",
        s.manifest_sha256,
        s.out.join(MANIFEST_FILE).display()
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_precedence_is_cli_env_profile_default() {
        assert_eq!(choose_epoch(Some(5), Some("6"), Some(7)).unwrap(), 5);
        assert_eq!(choose_epoch(None, Some("6"), Some(7)).unwrap(), 6);
        assert_eq!(choose_epoch(None, None, Some(7)).unwrap(), 7);
        assert_eq!(
            choose_epoch(None, Some(""), None).unwrap(),
            profile::DEFAULT_SOURCE_DATE_EPOCH
        );
        assert!(choose_epoch(None, Some("yesterday"), None).is_err());
    }

    #[test]
    fn default_lockfile_sits_next_to_the_profile() {
        assert_eq!(
            default_lockfile(Path::new("profiles/master.toml"), "master"),
            PathBuf::from("profiles/master.lock")
        );
    }
}
