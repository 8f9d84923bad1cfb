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
use crate::manifest::{
    KernelRecord, Manifest, PackageRecord, Sizes, FORMAT_VERSION, INITRAMFS_FILE, KERNEL_FILE,
    MANIFEST_FILE,
};
use crate::output::{file_sha256, Staging};
use crate::packages;
use crate::profile::{self, Profile};
use kubernetes_payload::components::{self, Sources};
use kubernetes_payload::{images, registry, sha256_hex};

/// Default zstd level of the initramfs. Measured on the master image (222
/// MiB of cpio): level 3 gives 79 MiB in ~4 s, level 19 gives 64 MiB in
/// ~150 s on one core. The kernel unpacks both at about the same speed, so
/// the default keeps rebuilds fast; `--zstd-level 19` trades build time for
/// size.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Where the Kubernetes payload (binaries, CNI manifest, container
/// images) comes from: the "three sources" of imagegen/README.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubernetesSource {
    /// Upstream download (the default): binaries from their URLs, images
    /// from their registries (or mirrors), all cached; a failure fails the
    /// build.
    Download,
    /// Like [`KubernetesSource::Download`], but when upstream is
    /// unreachable (DNS, connect, timeout; never a checksum or digest
    /// mismatch, never an HTTP error) the image is built without
    /// Kubernetes, with a loud warning and the reason recorded.
    Auto,
    /// A components directory (`--components-dir DIR`): the binaries by
    /// name and the images as OCI archives in `DIR/images/*.tar`.
    Directory(PathBuf),
    /// No Kubernetes (`--kubernetes none`, `--without-kubernetes`).
    None,
}

/// The reason recorded when `--kubernetes auto` could not reach upstream.
pub fn unreachable_reason(what: &str) -> String {
    format!(
        "Kubernetes components unreachable at build time: {what}; rebuild with \
         --components-dir DIR or from a machine that reaches upstream"
    )
}

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
    /// Where the Kubernetes components and images come from.
    pub kubernetes: KubernetesSource,
    /// Registry mirrors from the command line (registry host → base URL),
    /// each replacing the profile's mirror for the same host.
    pub registry_mirrors: BTreeMap<String, String>,
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
    let (kubernetes, component_files, data_files) = kubernetes_components(&profile, opts, epoch)?;

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
    let mut generated = bake::generated(&profile, &kubernetes);
    generated.extend(data_files);
    generated.sort_by(|a, b| a.path().cmp(b.path()));
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
    let stats = staging.write_with(INITRAMFS_FILE, |w| {
        rootfs::cpio::write_initramfs(&assembled.tree, epoch, opts.zstd_level, w).map_err(|e| {
            match e {
                // The I/O error alone: the output error names the file.
                rootfs::cpio::CpioError::Write(io) => io,
                other => std::io::Error::other(other),
            }
        })
    })?;
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

/// What [`kubernetes_components`] returns: the record, the executables and
/// the data files (images archive, CNI manifest).
type KubernetesPayload = (
    KubernetesRecord,
    Vec<assemble::Executable>,
    Vec<bake::Entry>,
);

/// The Kubernetes record, the component files to install (executable) and
/// the data files (images archive, CNI manifest), from the chosen source.
fn kubernetes_components(
    profile: &Profile,
    opts: &BuildOptions,
    epoch: u64,
) -> Result<KubernetesPayload> {
    let dir = match &opts.kubernetes {
        KubernetesSource::None => {
            eprintln!(
                "imagegen: --kubernetes none: not fetching {} (recorded in the image)",
                payload_names(profile)
            );
            return Ok((
                KubernetesRecord::absent(profile.kubernetes_version.clone()),
                Vec::new(),
                Vec::new(),
            ));
        }
        KubernetesSource::Directory(d) => Some(d.as_path()),
        KubernetesSource::Download | KubernetesSource::Auto => None,
    };
    match fetch_kubernetes(profile, opts, dir, epoch) {
        Ok(payload) => Ok(payload),
        Err(e) if opts.kubernetes == KubernetesSource::Auto => {
            let Some(what) = unreachable_target(&e) else {
                return Err(e);
            };
            let line = "=".repeat(78);
            eprintln!(
                "{line}\nimagegen: WARNING: upstream is unreachable: {what}\n\
                 imagegen: WARNING: --kubernetes auto: building WITHOUT Kubernetes ({}); \
                 the image records present = false.\n\
                 imagegen: WARNING: cause: {}\n{line}",
                payload_names(profile),
                crate::cli::error_text(&e)
            );
            tracing::warn!(%what, "upstream unreachable: building without Kubernetes");
            let mut record = KubernetesRecord::absent(profile.kubernetes_version.clone());
            record.reason = Some(unreachable_reason(&what));
            Ok((record, Vec::new(), Vec::new()))
        }
        Err(e) => Err(e),
    }
}

/// What was unreachable when `e` is an "upstream unreachable" error of the
/// components or the registry client.
fn unreachable_target(e: &anyhow::Error) -> Option<String> {
    if let Some(c) = e.downcast_ref::<components::ComponentError>() {
        return c.unreachable().map(str::to_owned);
    }
    e.downcast_ref::<images::ImagesError>()
        .and_then(images::ImagesError::unreachable)
}

fn payload_names(profile: &Profile) -> String {
    let mut names: Vec<String> = profile.components.iter().map(|c| c.name.clone()).collect();
    if !profile.images.is_empty() {
        names.push(format!("{} container images", profile.images.len()));
    }
    if let Some(cni) = &profile.cni {
        names.push(format!("the {} manifest", cni.name));
    }
    if names.is_empty() {
        "nothing declared".into()
    } else {
        names.join(", ")
    }
}

/// Fetches and verifies everything from `dir`, else from upstream.
fn fetch_kubernetes(
    profile: &Profile,
    opts: &BuildOptions,
    dir: Option<&Path>,
    epoch: u64,
) -> Result<KubernetesPayload> {
    let sources = Sources {
        dir,
        cache: &opts.cache,
        offline: opts.offline,
    };
    let mut files = Vec::new();
    let mut installed = Vec::new();
    for c in &profile.components {
        let data = components::obtain(c, &sources)?;
        for (path, bytes) in components::install_files(c, &data)? {
            installed.push(InstalledComponent {
                name: c.name.clone(),
                sha256: sha256_hex(&bytes),
                path: path.clone(),
            });
            files.push((path, bytes));
        }
    }
    let mut data_files = Vec::new();
    let mut images_archive = None;
    if !profile.images.is_empty() {
        let content = match dir {
            Some(dir) => images::from_directory(dir, &profile.images)?,
            None => {
                let mut mirrors = profile.registry_mirrors.clone();
                mirrors.extend(opts.registry_mirrors.clone());
                let client = registry::Client::new(&opts.cache, mirrors, opts.offline)?;
                images::from_registry(&client, &profile.images)?
            }
        };
        let tar = images::merge(&content, epoch)?;
        eprintln!(
            "imagegen: {} container images verified ({}), archive {} MiB",
            profile.images.len(),
            match dir {
                Some(d) => format!("from {}", d.display()),
                None => "from their registries".to_owned(),
            },
            tar.len() / (1024 * 1024)
        );
        data_files.push(bake::Entry::File {
            path: images::IMAGES_ARCHIVE_PATH.to_owned(),
            mode: 0o644,
            data: tar,
        });
        images_archive = Some(images::IMAGES_ARCHIVE_PATH.to_owned());
    }
    let mut cni_manifest = None;
    if let Some(cni) = &profile.cni {
        let path = format!("{}/{}.yaml", bake::CNI_DIR, cni.name);
        let as_component = crate::profile::Component {
            name: format!("{}.yaml", cni.name),
            url: cni.url.clone(),
            sha256: cni.sha256.clone(),
            path: path.clone(),
            unpack_to: None,
        };
        let data = components::obtain(&as_component, &sources)?;
        data_files.push(bake::Entry::File {
            path: path.clone(),
            mode: 0o644,
            data,
        });
        cni_manifest = Some(path);
    }
    Ok((
        KubernetesRecord {
            present: true,
            version: profile.kubernetes_version.clone(),
            reason: None,
            images_archive,
            cni_manifest,
            cni_pod_cidr: profile.cni.as_ref().and_then(|c| c.pod_cidr.clone()),
            components: installed,
        },
        files,
        data_files,
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

    /// A components directory made here: kubelet and a crictl tarball whose
    /// SHA256 the profile pins, two images in OCI archives, a CNI manifest.
    fn components_fixture(
        pin_other_digest: bool,
    ) -> (tempfile::TempDir, Profile, BuildOptions, String) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("components");
        std::fs::create_dir_all(c.join("images")).unwrap();
        std::fs::write(c.join("kubelet"), b"fake kubelet").unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(11);
        h.set_mode(0o755);
        b.append_data(&mut h, "crictl", &b"fake crictl"[..])
            .unwrap();
        let tgz = b.into_inner().unwrap().finish().unwrap();
        std::fs::write(c.join("crictl-v1.30.1-linux-amd64.tar.gz"), &tgz).unwrap();
        let (pause, pause_digest) = images::tiny_archive("registry.k8s.io/pause:3.9", 1).unwrap();
        std::fs::write(c.join("images/pause.tar"), pause).unwrap();
        let (dns, dns_digest) =
            images::tiny_archive("registry.k8s.io/coredns/coredns:v1.11.1", 2).unwrap();
        std::fs::write(c.join("images/coredns.tar"), dns).unwrap();
        let manifest = "net-conf.json: |\n  { \"Network\": \"10.244.0.0/16\" }\n";
        std::fs::write(c.join("kube-flannel.yml"), manifest).unwrap();
        let dns_pin = if pin_other_digest {
            format!("sha256:{}", "1".repeat(64))
        } else {
            dns_digest
        };
        let text = format!(
            "[kubernetes]\nversion = \"v1.30.4\"\n\
             images = [\"registry.k8s.io/pause:3.9@{pause_digest}\", \
             \"registry.k8s.io/coredns/coredns:v1.11.1@{dns_pin}\"]\n\
             [kubernetes.components.kubelet]\nurl = \"https://example.invalid/kubelet\"\n\
             sha256 = \"{}\"\n\
             [kubernetes.components.crictl]\n\
             url = \"https://example.invalid/crictl-v1.30.1-linux-amd64.tar.gz\"\n\
             sha256 = \"{}\"\nunpack_to = \"/usr/bin\"\n\
             [kubernetes.cni]\nname = \"flannel\"\n\
             url = \"https://example.invalid/kube-flannel.yml\"\nsha256 = \"{}\"\n\
             pod_cidr = \"10.244.0.0/16\"\n[cluster]\nrole = \"master\"\n",
            sha256_hex(b"fake kubelet"),
            sha256_hex(&tgz),
            sha256_hex(manifest.as_bytes()),
        );
        let path = dir.path().join("m.toml");
        std::fs::write(&path, text).unwrap();
        let profile = profile::load(&path).unwrap();
        let opts = BuildOptions {
            profile: path,
            out: None,
            lockfile: None,
            offline: true,
            archive: None,
            cache: dir.path().join("cache"),
            agent_bin: PathBuf::from("/nonexistent"),
            kubernetes: KubernetesSource::Directory(c),
            registry_mirrors: BTreeMap::new(),
            source_date_epoch: None,
            env_source_date_epoch: None,
            progress: false,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        };
        (dir, profile, opts, manifest.to_owned())
    }

    #[test]
    fn components_dir_bakes_record_archive_and_cni_manifest() {
        let (_dir, profile, opts, manifest) = components_fixture(false);
        let (record, files, data) = kubernetes_components(&profile, &opts, 9).unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/usr/bin/crictl", "/usr/bin/kubelet"]);
        assert_eq!(files[0].1, b"fake crictl");
        let parsed: toml::Table = record.to_toml().parse().unwrap();
        assert_eq!(parsed["present"].as_bool(), Some(true));
        assert_eq!(
            parsed["images_archive"].as_str(),
            Some(images::IMAGES_ARCHIVE_PATH)
        );
        assert_eq!(
            parsed["cni_manifest"].as_str(),
            Some("/usr/lib/kubeboot/cni/flannel.yaml")
        );
        assert_eq!(parsed["cni_pod_cidr"].as_str(), Some("10.244.0.0/16"));
        let data_of = |p: &str| match data.iter().find(|e| e.path() == p) {
            Some(bake::Entry::File { data, mode, .. }) => {
                assert_eq!(*mode, 0o644);
                data.clone()
            }
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(
            data_of("/usr/lib/kubeboot/cni/flannel.yaml"),
            manifest.as_bytes()
        );
        let archive = data_of(images::IMAGES_ARCHIVE_PATH);
        let mut t = tar::Archive::new(&archive[..]);
        let mut index = None;
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("index.json") {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                index = Some(s);
            }
        }
        let index: serde_json::Value = serde_json::from_str(&index.unwrap()).unwrap();
        let names: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [
                "registry.k8s.io/pause:3.9",
                "registry.k8s.io/coredns/coredns:v1.11.1"
            ]
        );
    }

    #[test]
    fn mismatching_image_digest_fails_with_both_digests() {
        let (_dir, profile, opts, _) = components_fixture(true);
        let err = kubernetes_components(&profile, &opts, 9)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("registry.k8s.io/coredns/coredns:v1.11.1"),
            "{err}"
        );
        assert!(err.contains(&"1".repeat(64)), "{err}");
        assert!(err.contains("refusing"), "{err}");
    }

    /// The fixture with the binaries and the CNI manifest cached, so only
    /// the images are left to come from a registry.
    fn download_fixture() -> (tempfile::TempDir, Profile, BuildOptions) {
        let (dir, profile, mut opts, _) = components_fixture(false);
        opts.kubernetes = KubernetesSource::Download;
        let cache = opts.cache.join("components");
        std::fs::create_dir_all(&cache).unwrap();
        let mut pinned: Vec<(String, String)> = profile
            .components
            .iter()
            .map(|c| (c.url.clone(), c.sha256.clone()))
            .collect();
        let cni = profile.cni.clone().unwrap();
        pinned.push((cni.url, cni.sha256));
        for (url, sha) in pinned {
            let src = dir
                .path()
                .join("components")
                .join(url.rsplit('/').next().unwrap());
            std::fs::copy(src, cache.join(sha)).unwrap();
        }
        (dir, profile, opts)
    }

    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    #[test]
    fn unreachable_registry_fails_download_and_names_the_choices() {
        let (_dir, profile, mut opts) = download_fixture();
        opts.offline = false;
        opts.registry_mirrors = BTreeMap::from([("registry.k8s.io".to_owned(), closed_port())]);
        let err = kubernetes_components(&profile, &opts, 9).unwrap_err();
        assert!(unreachable_target(&err).is_some(), "{err:#}");
        let text = format!("{err:#}");
        assert!(text.contains("registry.k8s.io/pause:3.9"), "{text}");
        assert!(text.contains("--components-dir"), "{text}");
        assert!(text.contains("--kubernetes auto"), "{text}");
    }

    #[test]
    fn auto_builds_without_kubernetes_when_the_registry_is_unreachable() {
        let (_dir, profile, mut opts) = download_fixture();
        opts.offline = false;
        opts.kubernetes = KubernetesSource::Auto;
        let mirror = closed_port();
        opts.registry_mirrors = BTreeMap::from([("registry.k8s.io".to_owned(), mirror.clone())]);
        let (record, files, data) = kubernetes_components(&profile, &opts, 9).unwrap();
        assert!(!record.present);
        assert!(files.is_empty() && data.is_empty());
        let reason = record.reason.unwrap();
        assert!(
            reason.starts_with("Kubernetes components unreachable at build time: "),
            "{reason}"
        );
        assert!(reason.contains(&mirror), "{reason}");
        assert!(reason.ends_with(
            "; rebuild with --components-dir DIR or from a machine that reaches upstream"
        ));
    }

    #[test]
    fn auto_still_fails_on_what_is_not_unreachable() {
        // Offline with nothing cached is not "unreachable".
        let (_dir, profile, mut opts) = download_fixture();
        opts.kubernetes = KubernetesSource::Auto;
        let err = format!(
            "{:#}",
            kubernetes_components(&profile, &opts, 9).unwrap_err()
        );
        assert!(err.contains("--offline"), "{err}");
        assert!(err.contains("registry.k8s.io/pause:3.9"), "{err}");
    }

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
