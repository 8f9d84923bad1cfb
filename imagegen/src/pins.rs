//! `imagegen pins`: the Kubernetes pins of a components directory, written
//! as the `[kubernetes]` table of a profile.
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

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::components::sha256_hex;
use crate::images::{self, ImagesError};
use crate::profile::ImageRef;

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
}

/// One pinned component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedComponent {
    /// Component name (`kubelet`, `crictl`).
    pub name: String,
    /// The file in the components directory.
    pub file: String,
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
    /// The components directory (as given).
    pub dir: PathBuf,
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
            file,
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
        dir: dir.to_owned(),
        version,
        version_from,
        components,
        images,
        left_out,
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
        "# Kubernetes pins of the components directory {} (`imagegen pins`).",
        p.dir.display()
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
        if c.upstream {
            line(&format!("# {} in the components directory", c.file));
        } else {
            line(&format!(
                "# {} in the components directory; no upstream URL is known for it, so only",
                c.file
            ));
            line("# --components-dir can provide it (a download fails: unknown.invalid).");
        }
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
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/base.toml");
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
        let p = crate::profile::load(&derived).unwrap();
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
