//! The upstream-download source of container images against a real
//! registry: the distribution registry v2 (`docker-registry`, started here
//! on a free loopback port with its own config and storage, killed on
//! drop), filled with `skopeo copy` from the same OCI archives a components
//! directory would hold, and pulled through imagegen's client via a mirror
//! mapping of `registry.k8s.io`.
//!
//! Needs `docker-registry`, `skopeo` and (for the import) `containerd`/`ctr`
//! from the Makefile's APT_PACKAGES; fails, not skips, without them.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Containerd, Daemon};
use kubernetes_payload::images::{self, ImagesError};
use kubernetes_payload::registry::{Client, RegistryError};
use profile::ImageRef;

const PAUSE: &str = "registry.k8s.io/pause:3.9";
const COREDNS: &str = "registry.k8s.io/coredns/coredns:v1.11.1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registry holding the two test images, and the components directory
/// holding the same images as OCI archives.
struct Fixture {
    dir: tempfile::TempDir,
    url: String,
    refs: Vec<ImageRef>,
    /// The amd64 manifest digest inside coredns's two-platform index.
    coredns_amd64: String,
    _registry: Daemon,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let config = d.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-only\n",
                d.join("storage").display()
            ),
        )
        .unwrap();
        // Not the packaged service: this process, this config, this storage.
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry is installed (Makefile APT_PACKAGES)");
        let registry = Daemon(child);
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::blocking::get(format!("{url}/v2/"))
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not answer: {}",
                std::fs::read_to_string(d.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let images_dir = d.join("components/images");
        std::fs::create_dir_all(&images_dir).unwrap();
        let (pause, pause_digest) = images::tiny_archive(PAUSE, 1).unwrap();
        let (dns, dns_digest, coredns_amd64) = images::tiny_index_archive(COREDNS, 2).unwrap();
        for (file, data, repo) in [
            ("pause.tar", pause, "pause:3.9"),
            ("coredns.tar", dns, "coredns/coredns:v1.11.1"),
        ] {
            let path = images_dir.join(file);
            std::fs::write(&path, data).unwrap();
            push(&path, &format!("127.0.0.1:{port}/{repo}"));
        }
        Fixture {
            dir,
            url,
            refs: vec![
                ImageRef {
                    name: PAUSE.into(),
                    digest: pause_digest,
                },
                ImageRef {
                    name: COREDNS.into(),
                    digest: dns_digest,
                },
            ],
            coredns_amd64,
            _registry: registry,
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn client(&self, offline: bool) -> Client {
        mirror_client(&self.cache(), &self.url, offline)
    }

    /// The registry's own file for a blob (to corrupt what it serves).
    fn stored_blob(&self, hex: &str) -> PathBuf {
        self.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

fn mirror_client(cache: &Path, mirror: &str, offline: bool) -> Client {
    Client::new(
        cache,
        BTreeMap::from([("registry.k8s.io".to_owned(), mirror.to_owned())]),
        offline,
    )
    .unwrap()
}

/// `skopeo copy` keeping the digests (no recompression) and every platform.
fn push(archive: &Path, dest: &str) {
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo is installed (Makefile APT_PACKAGES)");
    assert!(
        out.status.success(),
        "skopeo copy to {dest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The entries of a tar archive: path → bytes.
fn tar_entries(data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut t = tar::Archive::new(data);
    let mut out = BTreeMap::new();
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        out.insert(path, bytes);
    }
    out
}

/// The registry error behind an image error; panics on any other error.
fn registry_cause(err: &ImagesError) -> &RegistryError {
    match err {
        ImagesError::Registry { cause, .. } => cause,
        other => panic!("not a registry error: {other}"),
    }
}

#[test]
fn registry_pull_bakes_the_directory_archive_and_is_reused_offline() {
    let f = Fixture::start();
    let pulled = images::from_registry(&f.client(false), &f.refs).unwrap();
    let from_registry = images::merge(&pulled, 1_704_067_200).unwrap();
    let from_dir =
        images::collect(&f.dir.path().join("components"), &f.refs, 1_704_067_200).unwrap();
    assert!(
        from_registry == from_dir,
        "the registry pull and the components directory bake different archives"
    );

    // The index image carries its index and the amd64 manifest only.
    let entries = tar_entries(&from_registry);
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    assert!(entries.contains_key(&blob(&f.refs[1].digest)));
    assert!(entries.contains_key(&blob(&f.coredns_amd64)));
    let index: serde_json::Value =
        serde_json::from_slice(&entries[&blob(&f.refs[1].digest)]).unwrap();
    let arm64 = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "arm64");
    assert!(
        !entries.contains_key(&blob(arm64)),
        "the arm64 manifest was baked"
    );
    let top: serde_json::Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    assert_eq!(top["manifests"][1]["digest"], f.refs[1].digest.as_str());
    assert_eq!(
        top["manifests"][1]["annotations"]["io.containerd.image.name"],
        COREDNS
    );

    // Everything is cached: offline, with the mirror gone, the same archive.
    let cached = std::fs::read_dir(f.cache().join("blobs/sha256"))
        .unwrap()
        .count();
    let baked = entries
        .keys()
        .filter(|k| k.starts_with("blobs/sha256/") && k.len() > "blobs/sha256/".len())
        .count();
    assert_eq!(cached, baked, "one cache file per baked blob");
    let gone = format!("http://127.0.0.1:{}", free_port());
    let offline = mirror_client(&f.cache(), &gone, true);
    let again = images::merge(
        &images::from_registry(&offline, &f.refs).unwrap(),
        1_704_067_200,
    )
    .unwrap();
    assert!(again == from_registry, "the offline rebuild differs");
}

#[test]
fn offline_without_cache_names_every_missing_image() {
    let f = Fixture::start();
    let err = images::from_registry(&f.client(true), &f.refs).unwrap_err();
    assert!(matches!(err, ImagesError::NotCached { .. }), "{err}");
    let text = err.to_string();
    for r in &f.refs {
        assert!(text.contains(&format!("{}@{}", r.name, r.digest)), "{text}");
    }
    assert!(text.contains("--offline"), "{text}");
}

#[test]
fn tampered_blobs_and_wrong_pins_are_refused() {
    let f = Fixture::start();
    let client = f.client(false);
    images::from_registry(&client, &f.refs[..1]).unwrap();

    // A cached blob altered after the fact: refused, naming the file.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            f.cache()
                .join("blobs/sha256")
                .join(f.refs[0].digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let cached_layer = f.cache().join("blobs/sha256").join(&layer);
    std::fs::write(&cached_layer, b"tampered").unwrap();
    let err = images::from_registry(&client, &f.refs[..1]).unwrap_err();
    assert!(
        matches!(registry_cause(&err), RegistryError::CorruptCache { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(PAUSE), "{text}");
    assert!(text.contains(&cached_layer.display().to_string()), "{text}");
    assert!(err.unreachable().is_none());

    // The registry serves other bytes for the layer: refused, not cached.
    std::fs::remove_file(&cached_layer).unwrap();
    std::fs::write(f.stored_blob(&layer), b"served but wrong").unwrap();
    let err = images::from_registry(&client, &f.refs[..1]).unwrap_err();
    assert!(
        matches!(registry_cause(&err), RegistryError::Digest { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("refusing"), "{err}");
    assert!(!cached_layer.exists());
    assert!(err.unreachable().is_none());

    // A pin the registry does not know: the 404 names the image and is not
    // "unreachable" (auto does not skip it).
    let wrong = [ImageRef {
        name: PAUSE.into(),
        digest: format!("sha256:{}", "0".repeat(64)),
    }];
    let err = images::from_registry(&client, &wrong).unwrap_err();
    assert!(
        matches!(
            registry_cause(&err),
            RegistryError::Status { status: 404, .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&"0".repeat(64)), "{err}");
    assert!(err.unreachable().is_none());
}

#[test]
fn closed_mirror_is_unreachable() {
    let cache = tempfile::tempdir().unwrap();
    let mirror = format!("http://127.0.0.1:{}", free_port());
    let refs = [ImageRef {
        name: PAUSE.into(),
        digest: format!("sha256:{}", "1".repeat(64)),
    }];
    let err =
        images::from_registry(&mirror_client(cache.path(), &mirror, false), &refs).unwrap_err();
    let what = err
        .unreachable()
        .unwrap_or_else(|| panic!("not unreachable: {err}"));
    assert!(what.starts_with(&mirror), "{what}");
    let text = err.to_string();
    assert!(text.contains("--kubernetes auto"), "{text}");
    assert!(text.contains("--components-dir"), "{text}");
}

/// The pulled index image (index + amd64 manifest, no arm64 content)
/// imports the way the agent imports it: `ctr images import` without
/// `--all-platforms`.
#[test]
fn pulled_index_image_imports_into_containerd() {
    let f = Fixture::start();
    let pulled = images::from_registry(&f.client(false), &f.refs).unwrap();
    let d = f.dir.path();
    let archive = d.join("images.oci.tar");
    std::fs::write(&archive, images::merge(&pulled, 1_704_067_200).unwrap()).unwrap();

    let containerd = Containerd::start(d);
    let expected: Vec<(&str, &str)> = f
        .refs
        .iter()
        .map(|r| (r.name.as_str(), r.digest.as_str()))
        .collect();
    containerd.import_and_expect(&archive, &expected);
}
