//! `imagegen pins`: the Kubernetes pins of a components directory or of an
//! upstream release, written as the `[kubernetes]` table of a profile.
//!
//! An operator who changes the Kubernetes version (or builds the binaries
//! and images themselves) fills a components directory (layout:
//! imagegen/README.md, "Kubernetes payload") and runs `imagegen pins
//! --components-dir DIR`. The output goes into a profile that extends the
//! shipped one: its `replace = ["components", "images"]` makes the new
//! binaries and images replace the parent's instead of being added to them
//! (the profile crate's merge rules), so nothing of `base.toml` is copied.
//!
//! What is read from DIR:
//!
//! * the binaries at its top level, by the names the shipped profiles use:
//!   `kubelet`, `kubeadm`, `kubectl` (and the other Kubernetes server
//!   binaries) with their upstream URL for the version
//!   (`https://dl.k8s.io/release/<version>/bin/linux/amd64/<name>`),
//!   `crictl-<v>-linux-amd64.tar.gz` and `cni-plugins-linux-amd64-<v>.tgz`
//!   with their release URLs and `unpack_to`. Any other file is pinned
//!   under its own name with a URL under `unknown.invalid` (a reserved
//!   name that never resolves): it can come only from a components
//!   directory, and the fragment says so. YAML files (the CNI manifest) are
//!   left to `[kubernetes.cni]`, which this command does not change;
//! * every image in `DIR/images/*.tar`, by the reference and digest of its
//!   `index.json` entry, walked exactly as a build does (every blob checked,
//!   the linux/amd64 manifest found), so the printed pins build.
//!
//! The version is `--version V`, else the tag of the `kube-apiserver` image.
//!
//! **An upstream release** (`imagegen pins --version V [--profile P]`, no
//! components directory; needs the network or mirrors): the release
//! binaries that `P` pins (`kubelet`, `kubeadm`, `kubectl`, ...) at
//! `<release-url>/V/bin/linux/amd64/<name>` with the SHA256 that upstream
//! publishes beside each (`<name>.sha256`; the binaries themselves are not
//! downloaded); `P`'s images with the four control-plane images'
//! (`kube-apiserver`, `-controller-manager`, `-scheduler`, `-proxy`) tags
//! set to V, every digest resolved by tag in its registry (`P`'s and
//! `--registry-mirror` mirrors honoured); `P`'s other components (crictl,
//! the CNI plugins) and the other images' tags (pause, CoreDNS) carried
//! over unchanged, and the output says so: which pause and CoreDNS a
//! kubeadm version expects is `kubeadm config images list
//! --kubernetes-version V`.

use std::path::{Path, PathBuf};

use thiserror::Error;

use profile::{ImageRef, Profile};

use crate::components::{self, ComponentError};
use crate::images::{self, ImagesError};
use crate::registry::{self, RegistryError};
use crate::sha256_hex;

/// Where upstream publishes the release binaries (`--release-url`).
pub const DEFAULT_RELEASE_URL: &str = "https://dl.k8s.io/release";

/// The control-plane images whose tag is the Kubernetes version.
const VERSIONED_IMAGES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

/// Kubernetes release binaries, downloadable by name per version.
const RELEASE_BINARIES: &[&str] = &[
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

/// Errors collecting the pins.
#[derive(Debug, Error)]
pub enum PinsError {
    /// Reading the directory or a file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The images could not be read or would not build.
    #[error("{0}")]
    Images(#[from] ImagesError),
    /// No version given and none in the images.
    #[error(
        "no --version given and no kube-apiserver image in {} to read it from", dir.display()
    )]
    NoVersion {
        /// The images directory.
        dir: PathBuf,
    },
    /// The directory holds nothing to pin.
    #[error("{} holds no binaries and no images/*.tar", dir.display())]
    Empty {
        /// The components directory.
        dir: PathBuf,
    },
    /// A published checksum could not be fetched or read.
    #[error("{name}: the published SHA256 {url}: {reason}")]
    Published {
        /// Component.
        name: String,
        /// The `.sha256` URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An image's tag could not be resolved in its registry.
    #[error("{image}: resolving its digest: {source}")]
    Resolve {
        /// The image reference (with the tag).
        image: String,
        /// Why.
        source: RegistryError,
    },
    /// An image of the profile has no tag to resolve.
    #[error("{image}: the profile names it without a tag; nothing to resolve")]
    NoTag {
        /// The image reference.
        image: String,
    },
}

/// One pinned component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedComponent {
    /// Component name (`kubelet`, `crictl`).
    pub name: String,
    /// Where the pin comes from (a comment line of the output).
    pub origin: String,
    /// Upstream URL (its file name is how a components directory finds it).
    pub url: String,
    /// Whether the URL is a known upstream location.
    pub upstream: bool,
    /// Lowercase hex SHA256 of the file.
    pub sha256: String,
    /// Directory a tarball's files are installed into.
    pub unpack_to: Option<String>,
}

/// Everything `imagegen pins` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// What the pins were read from (`the components directory DIR`).
    pub source: String,
    /// The Kubernetes version.
    pub version: String,
    /// Where the version came from.
    pub version_from: String,
    /// The binaries, by name.
    pub components: Vec<PinnedComponent>,
    /// The images, sorted by name.
    pub images: Vec<ImageRef>,
    /// Files left out (the CNI manifest), by name.
    pub left_out: Vec<String>,
    /// Notes for the reader (what was carried over), one comment line each.
    pub notes: Vec<String>,
}

/// What a file at the top of a components directory is: the component
/// name, its upstream URL and `unpack_to`. Pure.
fn classify(file: &str, version: &str) -> (String, Option<String>, Option<String>) {
    if RELEASE_BINARIES.contains(&file) {
        let url = format!("https://dl.k8s.io/release/{version}/bin/linux/amd64/{file}");
        return (file.to_owned(), Some(url), None);
    }
    if let Some(v) = file
        .strip_prefix("crictl-")
        .and_then(|r| r.strip_suffix("-linux-amd64.tar.gz"))
    {
        let url =
            format!("https://github.com/kubernetes-sigs/cri-tools/releases/download/{v}/{file}");
        return ("crictl".into(), Some(url), Some("/usr/bin".into()));
    }
    if let Some(v) = file
        .strip_prefix("cni-plugins-linux-amd64-")
        .and_then(|r| r.strip_suffix(".tgz"))
    {
        let url =
            format!("https://github.com/containernetworking/plugins/releases/download/{v}/{file}");
        return ("cni-plugins".into(), Some(url), Some("/opt/cni/bin".into()));
    }
    (file.to_owned(), None, None)
}

/// A component name the profile accepts as a TOML key without quoting and
/// as a file name: letters, digits, `-`, `_`, `.`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Reads the pins of `dir`.
pub fn collect(dir: &Path, version: Option<&str>) -> Result<Pins, PinsError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| PinsError::Io { what, path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let entry = entry.map_err(io("listing", dir))?;
        let path = entry.path();
        if path.is_file() {
            files.push((entry.file_name().to_string_lossy().into_owned(), path));
        }
    }
    files.sort();
    let images = if dir.join("images").is_dir() {
        let refs = images::named_in_directory(dir)?;
        // Walked as a build walks them: the pins printed are pins that build.
        images::from_directory(dir, &refs)?;
        refs
    } else {
        Vec::new()
    };
    let from_images = images.iter().find_map(|i| {
        let (repo, tag) = i.name.rsplit_once(':')?;
        (repo.rsplit('/').next() == Some("kube-apiserver")).then(|| tag.to_owned())
    });
    let (version, version_from) = match (version, from_images) {
        (Some(v), _) => (v.to_owned(), "--version".to_owned()),
        (None, Some(v)) => (v, "the kube-apiserver image's tag".to_owned()),
        (None, None) => {
            return Err(PinsError::NoVersion {
                dir: dir.join("images"),
            })
        }
    };
    let mut components: Vec<PinnedComponent> = Vec::new();
    let mut left_out = Vec::new();
    for (file, path) in files {
        if file.ends_with(".yaml") || file.ends_with(".yml") || !plain_name(&file) {
            left_out.push(file);
            continue;
        }
        let (name, url, unpack_to) = classify(&file, &version);
        let data = std::fs::read(&path).map_err(io("reading", &path))?;
        components.push(PinnedComponent {
            url: url
                .clone()
                .unwrap_or_else(|| format!("https://unknown.invalid/{file}")),
            upstream: url.is_some(),
            name,
            origin: if url.is_some() {
                format!("{file} in the components directory")
            } else {
                format!(
                    "{file} in the components directory; no upstream URL is known for it, so \
                     only\n# --components-dir can provide it (a download fails: unknown.invalid)."
                )
            },
            sha256: sha256_hex(&data),
            unpack_to,
        });
    }
    components.sort_by(|a, b| a.name.cmp(&b.name));
    if components.is_empty() && images.is_empty() {
        return Err(PinsError::Empty {
            dir: dir.to_owned(),
        });
    }
    Ok(Pins {
        source: format!("the components directory {}", dir.display()),
        version,
        version_from,
        components,
        images,
        left_out,
        notes: Vec::new(),
    })
}

/// An image reference's repository name (last path part) and tag. Pure.
fn name_and_tag(image: &str) -> Option<(&str, &str)> {
    let (repo, tag) = image.rsplit_once(':')?;
    if tag.contains('/') {
        return None;
    }
    Some((repo.rsplit('/').next().unwrap_or(repo), tag))
}

/// The image reference to pin for `version`: the control-plane images'
/// tag becomes the version, every other image keeps its own. Pure.
fn retag(image: &str, version: &str) -> Result<(String, bool), PinsError> {
    let Some((name, tag)) = name_and_tag(image) else {
        return Err(PinsError::NoTag {
            image: image.to_owned(),
        });
    };
    if VERSIONED_IMAGES.contains(&name) {
        let repo = &image[..image.len() - tag.len() - 1];
        Ok((format!("{repo}:{version}"), true))
    } else {
        Ok((image.to_owned(), false))
    }
}

/// The first field of a published `.sha256` file, if it is a SHA256. Pure.
fn published_sha256(text: &str) -> Option<String> {
    let hex = text.split_whitespace().next()?.to_ascii_lowercase();
    profile::is_sha256(&hex).then_some(hex)
}

/// The pins of upstream release `version`, starting from `profile`'s
/// (see the module docs): published checksums from `release_url`,
/// digests resolved by tag through `client`.
pub fn collect_upstream(
    profile: &Profile,
    version: &str,
    release_url: &str,
    client: &registry::Client,
) -> Result<Pins, PinsError> {
    let release_url = release_url.trim_end_matches('/');
    let mut components = Vec::new();
    let mut carried = Vec::new();
    for c in &profile.components {
        if !RELEASE_BINARIES.contains(&c.name.as_str()) {
            carried.push(c.name.clone());
            components.push(PinnedComponent {
                name: c.name.clone(),
                origin: format!("carried over from the profile {}", profile.name),
                url: c.url.clone(),
                upstream: true,
                sha256: c.sha256.clone(),
                unpack_to: c.unpack_to.clone(),
            });
            continue;
        }
        let url = format!("{release_url}/{version}/bin/linux/amd64/{}", c.name);
        let sum_url = format!("{url}.sha256");
        let failed = |reason: String| PinsError::Published {
            name: c.name.clone(),
            url: sum_url.clone(),
            reason,
        };
        let text = components::fetch_url(&c.name, &sum_url).map_err(|e| match e {
            ComponentError::Unreachable { reason, .. } => failed(format!("unreachable ({reason})")),
            ComponentError::Download { reason, .. } => failed(reason),
            other => failed(other.to_string()),
        })?;
        let sha256 = published_sha256(&String::from_utf8_lossy(&text))
            .ok_or_else(|| failed("not a SHA256 (want 64 hex digits first)".into()))?;
        components.push(PinnedComponent {
            name: c.name.clone(),
            origin: format!("published SHA256: {sum_url}"),
            url,
            upstream: true,
            sha256,
            unpack_to: c.unpack_to.clone(),
        });
    }
    components.sort_by(|a, b| a.name.cmp(&b.name));
    let mut images = Vec::new();
    let mut kept = Vec::new();
    for i in &profile.images {
        let (name, versioned) = retag(&i.name, version)?;
        if !versioned {
            kept.push(name.clone());
        }
        let reference = registry::Reference::parse(&name).map_err(|source| PinsError::Resolve {
            image: name.clone(),
            source,
        })?;
        let (_, tag) = name_and_tag(&name).ok_or_else(|| PinsError::NoTag {
            image: name.clone(),
        })?;
        let digest = client
            .resolve_tag(&reference, tag)
            .map_err(|source| PinsError::Resolve {
                image: name.clone(),
                source,
            })?;
        images.push(ImageRef { name, digest });
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    let mut notes = Vec::new();
    if !carried.is_empty() {
        notes.push(format!(
            "Carried over from the profile unchanged: {} (not Kubernetes release binaries).",
            carried.join(", ")
        ));
    }
    if !kept.is_empty() {
        notes.push(format!(
            "Tags kept from the profile (digests resolved now): {}; the ones kubeadm {version} \
             expects: `kubeadm config images list --kubernetes-version {version}`.",
            kept.join(", ")
        ));
    }
    Ok(Pins {
        source: format!(
            "Kubernetes {version} upstream ({release_url}; image digests from their registries)"
        ),
        version: version.to_owned(),
        version_from: "--version".to_owned(),
        components,
        images,
        left_out: Vec::new(),
        notes,
    })
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The pins as a profile's `[kubernetes]` table (with the `replace` rule
/// and comments saying where each value comes from). Pure.
pub fn to_toml(p: &Pins) -> String {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!(
        "# Kubernetes pins of {} (`imagegen pins`).",
        p.source
    ));
    line("# Put this table in a profile that extends the shipped one (for example");
    line("# `extends = \"base.toml\"`): `replace` makes these binaries and images replace");
    line("# the parent's instead of adding to them; the CNI and mirrors stay the parent's.");
    if !p.left_out.is_empty() {
        line(&format!(
            "# Not pinned here: {} (the CNI manifest is [kubernetes.cni]).",
            p.left_out.join(", ")
        ));
    }
    for n in &p.notes {
        line(&format!("# {n}"));
    }
    line("[kubernetes]");
    line(&format!(
        "version = {}  # from {}",
        quoted(&p.version),
        p.version_from
    ));
    line("replace = [\"components\", \"images\"]");
    line("images = [");
    for i in &p.images {
        line(&format!(
            "    {},",
            quoted(&format!("{}@{}", i.name, i.digest))
        ));
    }
    line("]");
    for c in &p.components {
        line("");
        line(&format!("[kubernetes.components.{}]", c.name));
        line(&format!("# {}", c.origin));
        line(&format!("url = {}", quoted(&c.url)));
        line(&format!("sha256 = {}", quoted(&c.sha256)));
        if let Some(dir) = &c.unpack_to {
            line(&format!("unpack_to = {}", quoted(dir)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::{self, Sources};

    const APISERVER: &str = "registry.k8s.io/kube-apiserver:v1.24.0-alpha.1";
    const PAUSE: &str = "registry.k8s.io/pause:3.6";

    fn tgz(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    }

    /// A components directory as an operator fills it for a version the
    /// shipped profile does not pin.
    fn components_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["kubelet", "kubeadm", "kubectl"] {
            std::fs::write(d.join(name), format!("{name} v1.24.0-alpha.1")).unwrap();
        }
        std::fs::write(
            d.join("crictl-v1.24.0-linux-amd64.tar.gz"),
            tgz("crictl", b"crictl"),
        )
        .unwrap();
        std::fs::write(
            d.join("cni-plugins-linux-amd64-v1.1.1.tgz"),
            tgz("bridge", b"bridge"),
        )
        .unwrap();
        std::fs::write(d.join("kube-flannel.yml"), "kind: List\n").unwrap();
        std::fs::write(d.join("my-tool"), "built here").unwrap();
        std::fs::create_dir(d.join("images")).unwrap();
        for (file, name) in [("apiserver.tar", APISERVER), ("pause.tar", PAUSE)] {
            let (archive, _) = images::tiny_archive(name, 0).unwrap();
            std::fs::write(d.join("images").join(file), archive).unwrap();
        }
        dir
    }

    #[test]
    fn pins_of_a_components_directory() {
        let dir = components_dir();
        let p = collect(dir.path(), None).unwrap();
        assert_eq!(p.version, "v1.24.0-alpha.1");
        assert_eq!(p.version_from, "the kube-apiserver image's tag");
        let names: Vec<&str> = p.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cni-plugins",
                "crictl",
                "kubeadm",
                "kubectl",
                "kubelet",
                "my-tool"
            ]
        );
        assert_eq!(p.left_out, ["kube-flannel.yml"]);
        let (_, digest) = images::tiny_archive(PAUSE, 0).unwrap();
        let text = to_toml(&p);
        for needle in [
            "[kubernetes]\nversion = \"v1.24.0-alpha.1\"  # from the kube-apiserver image's tag\n\
             replace = [\"components\", \"images\"]\nimages = [\n",
            &format!("    \"{APISERVER}@{digest}\",\n    \"{PAUSE}@{digest}\",\n]\n"),
            "[kubernetes.components.kubelet]\n# kubelet in the components directory\n\
             url = \"https://dl.k8s.io/release/v1.24.0-alpha.1/bin/linux/amd64/kubelet\"\n",
            &format!("sha256 = \"{}\"\n", sha256_hex(b"kubelet v1.24.0-alpha.1")),
            "[kubernetes.components.crictl]\n# crictl-v1.24.0-linux-amd64.tar.gz in the components \
             directory\nurl = \"https://github.com/kubernetes-sigs/cri-tools/releases/download/\
             v1.24.0/crictl-v1.24.0-linux-amd64.tar.gz\"\n",
            "unpack_to = \"/usr/bin\"\n",
            "unpack_to = \"/opt/cni/bin\"\n",
            "url = \"https://unknown.invalid/my-tool\"\n",
            "# Not pinned here: kube-flannel.yml",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        let explicit = collect(dir.path(), Some("v1.24.0")).unwrap();
        assert_eq!(explicit.version, "v1.24.0");
        assert!(to_toml(&explicit).contains("version = \"v1.24.0\"  # from --version\n"));
    }

    /// The fragment in a profile extending the repository's base.toml:
    /// the pins replace the shipped ones, and a build from the components
    /// directory finds and verifies every binary and image.
    #[test]
    fn a_derived_profile_with_the_pins_builds_from_the_directory() {
        let dir = components_dir();
        let pins = collect(dir.path(), None).unwrap();
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../profiles/base.toml");
        let profiles = tempfile::tempdir().unwrap();
        let derived = profiles.path().join("k124.toml");
        std::fs::write(
            &derived,
            format!(
                "extends = {}\nname = \"k124\"\n\n{}\n[cluster]\nrole = \"master\"\n",
                quoted(&base.display().to_string()),
                to_toml(&pins)
            ),
        )
        .unwrap();
        let p = profile::load(&derived).unwrap();
        assert_eq!(p.kubernetes_version.as_deref(), Some("v1.24.0-alpha.1"));
        let names: Vec<&str> = p.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, [APISERVER, PAUSE], "the v1.30.4 images are gone");
        let comps: Vec<&str> = p.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            comps,
            [
                "cni-plugins",
                "crictl",
                "kubeadm",
                "kubectl",
                "kubelet",
                "my-tool"
            ]
        );
        assert!(p.cni.is_some(), "the CNI stays the parent's");
        let cache = tempfile::tempdir().unwrap();
        let sources = Sources {
            dir: Some(dir.path()),
            cache: cache.path(),
            offline: true,
        };
        for c in &p.components {
            let data = components::obtain(c, &sources).unwrap();
            assert!(!components::install_files(c, &data).unwrap().is_empty());
        }
        let archive = images::collect(dir.path(), &p.images, 0).unwrap();
        assert!(!archive.is_empty());
    }

    /// `imagegen pins --version V --profile base.toml` against a local
    /// release server and registry mirror: the release binaries get the
    /// published checksums, the control-plane images the new tag and the
    /// digest the registry serves, the rest is carried over; the output
    /// loads as a derived profile with exactly those pins.
    #[test]
    fn pins_of_an_upstream_release() {
        let (base, _server) = crate::testserver::serve(usize::MAX, |_, path, _| {
            let ok = |body: Vec<u8>| ("200 OK", String::new(), body);
            if let Some(name) = path
                .strip_prefix("/release/v1.31.0/bin/linux/amd64/")
                .and_then(|n| n.strip_suffix(".sha256"))
            {
                return ok(format!("{}\n", sha256_hex(name.as_bytes())).into_bytes());
            }
            if let Some(rest) = path.strip_prefix("/v2/") {
                return ok(format!("{{\"manifest of\":\"{rest}\"}}").into_bytes());
            }
            ("404 Not Found", String::new(), Vec::new())
        });
        let profiles_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../profiles");
        let base_profile = profiles_dir.join("base.toml");
        let profile = profile::load(&profiles_dir.join("master.toml")).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let mirrors =
            std::collections::BTreeMap::from([("registry.k8s.io".to_owned(), base.clone())]);
        let client = registry::Client::new(cache.path(), mirrors, false).unwrap();
        let release = format!("{base}/release");
        let p = collect_upstream(&profile, "v1.31.0", &release, &client).unwrap();

        let digest_of = |repo_tag: &str| {
            let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
            format!(
                "sha256:{}",
                sha256_hex(format!("{{\"manifest of\":\"{repo}/manifests/{tag}\"}}").as_bytes())
            )
        };
        let images: Vec<(String, String)> = p
            .images
            .iter()
            .map(|i| (i.name.clone(), i.digest.clone()))
            .collect();
        let want: Vec<(String, String)> = [
            ("coredns/coredns", "v1.11.1"),
            ("kube-apiserver", "v1.31.0"),
            ("kube-controller-manager", "v1.31.0"),
            ("kube-proxy", "v1.31.0"),
            ("kube-scheduler", "v1.31.0"),
            ("pause", "3.9"),
        ]
        .iter()
        .map(|(repo, tag)| {
            (
                format!("registry.k8s.io/{repo}:{tag}"),
                digest_of(&format!("{repo}:{tag}")),
            )
        })
        .collect();
        assert_eq!(images, want);
        for i in &p.images {
            assert!(
                client.cache_path(&i.digest).unwrap().is_file(),
                "{} not cached",
                i.name
            );
        }

        let kubelet = p.components.iter().find(|c| c.name == "kubelet").unwrap();
        assert_eq!(
            kubelet.url,
            format!("{release}/v1.31.0/bin/linux/amd64/kubelet")
        );
        assert_eq!(kubelet.sha256, sha256_hex(b"kubelet"));
        let crictl = p.components.iter().find(|c| c.name == "crictl").unwrap();
        let parent = profile
            .components
            .iter()
            .find(|c| c.name == "crictl")
            .unwrap();
        assert_eq!((&crictl.url, &crictl.sha256), (&parent.url, &parent.sha256));

        let text = to_toml(&p);
        for needle in [
            "version = \"v1.31.0\"  # from --version\n",
            "# Carried over from the profile unchanged: cni-plugins, crictl",
            "# Tags kept from the profile (digests resolved now): registry.k8s.io/pause:3.9, \
             registry.k8s.io/coredns/coredns:v1.11.1; the ones kubeadm v1.31.0 expects: \
             `kubeadm config images list --kubernetes-version v1.31.0`.",
            &format!("# published SHA256: {release}/v1.31.0/bin/linux/amd64/kubeadm.sha256\n"),
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        let profiles = tempfile::tempdir().unwrap();
        let derived = profiles.path().join("k131.toml");
        std::fs::write(
            &derived,
            format!(
                "extends = {}\nname = \"k131\"\n\n{text}\n[cluster]\nrole = \"master\"\n",
                quoted(&base_profile.display().to_string()),
            ),
        )
        .unwrap();
        let d = profile::load(&derived).unwrap();
        assert_eq!(d.kubernetes_version.as_deref(), Some("v1.31.0"));
        assert_eq!(d.images, p.images);
        assert_eq!(d.components.len(), profile.components.len());

        // A release that is not published: the error names the URL.
        let err = collect_upstream(&profile, "v9.9.9", &release, &client)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{release}/v9.9.9/bin/linux/amd64/")) && err.contains("404"),
            "{err}"
        );
    }

    #[test]
    fn control_plane_images_take_the_version_and_others_keep_their_tag() {
        assert_eq!(
            retag("registry.k8s.io/kube-proxy:v1.30.4", "v1.31.0").unwrap(),
            ("registry.k8s.io/kube-proxy:v1.31.0".to_owned(), true)
        );
        assert_eq!(
            retag("127.0.0.1:5000/pause:3.9", "v1.31.0").unwrap(),
            ("127.0.0.1:5000/pause:3.9".to_owned(), false)
        );
        assert!(matches!(
            retag("127.0.0.1:5000/kube-proxy", "v1"),
            Err(PinsError::NoTag { .. })
        ));
        assert_eq!(
            published_sha256(&format!("{}  kubelet\n", "A".repeat(64))),
            Some("a".repeat(64))
        );
        assert_eq!(published_sha256("<html>"), None);
    }

    #[test]
    fn without_version_or_apiserver_image_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubelet"), "k").unwrap();
        let err = collect(dir.path(), None).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "no --version given and no kube-apiserver image in {} to read it from",
                dir.path().join("images").display()
            )
        );
        let empty = tempfile::tempdir().unwrap();
        let err = collect(empty.path(), Some("v1")).unwrap_err().to_string();
        assert!(
            err.ends_with("holds no binaries and no images/*.tar"),
            "{err}"
        );
    }

    #[test]
    fn an_archive_without_a_reference_is_named() {
        let dir = components_dir();
        let (archive, _) = images::tiny_archive("3.6", 0).unwrap();
        std::fs::write(dir.path().join("images/bare.tar"), archive).unwrap();
        let err = collect(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("bare.tar"), "{err}");
        assert!(err.contains("names no image"), "{err}");
    }
}
