//! NETWORK-DEPENDENT: talks to the Debian archive configured in this host's
//! apt sources (CI reaches it). Verifies the real bookworm `InRelease`
//! against the host's Debian archive keyring, loads the real `main` index,
//! resolves a realistic node package set and downloads one small package.
//! The cache lives in cargo's target tmp dir so reruns only re-verify.

use std::path::{Path, PathBuf};
use std::time::Instant;

use debian::{fetch, resolve, Archive, ArchiveSpec, Cache, Lockfile, DEFAULT_KEYRING};

fn spec() -> ArchiveSpec {
    assert!(
        Path::new(DEFAULT_KEYRING).is_file(),
        "{DEFAULT_KEYRING} missing: apt-get install debian-archive-keyring"
    );
    let url = debian::host_archive_url("bookworm")
        .expect("this test reads the archive URL from the host's apt sources");
    ArchiveSpec::new(&url, "bookworm")
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-bookworm-cache")
}

#[test]
fn real_bookworm_resolves_a_node_package_set() {
    let spec = spec();
    let cache = Cache::new(cache_dir()).unwrap();
    let t = Instant::now();
    let archive = Archive::open(&spec, &cache, false).unwrap();
    eprintln!(
        "opened {} {}: {} packages in {:?}",
        spec.url,
        spec.suite,
        archive.index().len(),
        t.elapsed()
    );
    assert!(
        archive.index().len() > 30_000,
        "bookworm main has ~60k packages"
    );
    assert_eq!(archive.release().codename.as_deref(), Some("bookworm"));

    let request: Vec<String> = [
        "systemd",
        "containerd",
        "runc",
        "etcd-server",
        "linux-image-amd64",
        "iproute2",
        "e2fsprogs",
        "kmod",
        "udev",
        "dbus",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let t = Instant::now();
    let resolution = resolve(archive.index(), &request, &[]).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = resolution
        .packages
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let bytes: u64 = resolution.packages.iter().map(|p| p.size).sum();
    eprintln!(
        "resolved {} packages ({} MB) in {:?}; skipped {:?}",
        names.len(),
        bytes / 1_000_000,
        t.elapsed(),
        resolution.skipped_deps
    );
    for must in [
        "libc6",
        "systemd",
        "containerd",
        "runc",
        "etcd-server",
        "dbus",
        "udev",
    ] {
        assert!(names.contains(&must), "{must} missing from {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("linux-image-6.")),
        "kernel image pulled via linux-image-amd64: {names:?}"
    );
    assert!(resolution.chain("libc6").len() >= 2);

    // Offline reopen uses only the cache and gives the same index.
    let offline = Archive::open(&spec, &cache, true).unwrap();
    assert_eq!(offline.release_sha256(), archive.release_sha256());
    let again = resolve(offline.index(), &request, &[]).unwrap();
    assert_eq!(again, resolution);

    // Download one small real package, verified against the signed index.
    let lock = Lockfile::from_resolution(&archive, &resolution);
    assert!(lock.matches_release(&offline));
    let kmod: Vec<_> = lock
        .packages()
        .iter()
        .filter(|p| p.name == "kmod")
        .cloned()
        .collect();
    let fetched = fetch(&kmod, &spec.url, &cache, false).unwrap();
    assert_eq!(fetched.len(), 1);
    let data = std::fs::read(&fetched[0].path).unwrap();
    assert_eq!(data.len() as u64, kmod[0].size);
    assert!(
        data.starts_with(b"!<arch>\ndebian-binary"),
        "a .deb is an ar archive"
    );
}

#[test]
fn real_inrelease_fails_against_a_foreign_keyring() {
    // The archive's InRelease must not verify against an unrelated keyring.
    let spec = spec();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path()).unwrap();
    let mut wrong = spec.clone();
    let foreign = dir.path().join("foreign.gpg");
    {
        use pgp::composed::{KeyType, SecretKeyParamsBuilder};
        use pgp::ser::Serialize;
        use rand::SeedableRng;
        let key = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("Foreign <foreign@example.invalid>".into())
            .build()
            .unwrap()
            .generate(rand::rngs::StdRng::seed_from_u64(9))
            .unwrap();
        let mut bytes = Vec::new();
        key.to_public_key().to_writer(&mut bytes).unwrap();
        std::fs::write(&foreign, bytes).unwrap();
    }
    wrong.keyring = foreign.clone();
    let err = Archive::open(&wrong, &cache, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("InRelease") && err.contains("foreign.gpg"),
        "{err}"
    );
}
