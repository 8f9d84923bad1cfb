//! End-to-end against a throwaway signed archive served on loopback:
//! InRelease signature, by-hash and plain index downloads, resolution,
//! lockfile, verified `.deb` downloads, offline mode and failure cases.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use debian::{fetch, resolve, Archive, ArchiveSpec, Cache, Error, LockedPackage, Lockfile};
use pgp::composed::{CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedSecretKey};
use pgp::ser::Serialize;
use pgp::types::Password;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// A tiny HTTP server on 127.0.0.1 (ephemeral port) serving `files`,
/// recording every requested path. Stopped on drop.
struct Server {
    url: String,
    files: Files,
    /// Paths answered with 503 once before being served.
    fail_once: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<String>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let files: Files = Arc::new(Mutex::new(files));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let fail_once: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, files, requests) = (server.clone(), files.clone(), requests.clone());
            let fail_once = fail_once.clone();
            std::thread::spawn(move || {
                for rq in server.incoming_requests() {
                    let path = rq.url().to_string();
                    requests.lock().unwrap().push(path.clone());
                    let mut failing = fail_once.lock().unwrap();
                    if let Some(i) = failing.iter().position(|p| *p == path) {
                        failing.remove(i);
                        let _ = rq.respond(tiny_http::Response::empty(503));
                        continue;
                    }
                    drop(failing);
                    let body = files.lock().unwrap().get(&path).cloned();
                    let _ = match body {
                        Some(b) => rq.respond(tiny_http::Response::from_data(b)),
                        None => rq.respond(tiny_http::Response::empty(404)),
                    };
                }
            })
        };
        Server {
            url: format!("http://127.0.0.1:{port}/debian"),
            files,
            fail_once,
            requests,
            server,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn set(&self, path: &str, data: Vec<u8>) {
        self.files.lock().unwrap().insert(path.into(), data);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn key(seed: u64) -> SignedSecretKey {
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(format!("Archive {seed} <archive@example.invalid>"))
        .build()
        .unwrap()
        .generate(rand::rngs::StdRng::seed_from_u64(seed))
        .unwrap()
}

fn write_keyring(dir: &Path, name: &str, key: &SignedSecretKey) -> PathBuf {
    let mut bytes = Vec::new();
    key.to_public_key().to_writer(&mut bytes).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Fake `.deb` contents per package.
fn deb(name: &str) -> Vec<u8> {
    format!("!<arch>\ndebian-binary fake payload of {name}\n")
        .repeat(50)
        .into_bytes()
}

struct Fixture {
    server: Server,
    key: SignedSecretKey,
    dir: tempfile::TempDir,
    keyring: PathBuf,
}

impl Fixture {
    fn spec(&self) -> ArchiveSpec {
        let mut spec = ArchiveSpec::new(&self.server.url, "testing");
        spec.components = vec!["main".into(), "contrib".into()];
        spec.keyring = self.keyring.clone();
        spec
    }

    fn cache(&self) -> Cache {
        Cache::new(self.dir.path().join("cache")).unwrap()
    }
}

fn stanza(name: &str, version: &str, extra: &str) -> String {
    let data = deb(name);
    format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/main/{name}_{version}_amd64.deb\nSize: {}\nSHA256: {}\nDescription: {name} for tests\n{extra}\n",
        data.len(),
        sha(&data)
    )
}

/// Builds and serves a signed archive: `main` as Packages.xz (by-hash
/// only), `contrib` as Packages.gz (plain path only).
fn fixture() -> Fixture {
    let main = [
        stanza(
            "app",
            "1.0-1",
            "Depends: libfoo (>= 1.1), mta | mail-transport-agent\nPre-Depends: libc6",
        ),
        stanza("libfoo", "1.2-1", "Depends: libc6 (>= 2.36)"),
        stanza("libc6", "2.36-9", "Priority: required"),
        stanza("libc6-old", "2.31-1", ""),
    ]
    .join("\n");
    let contrib = stanza("postfix", "3.7-1", "Provides: mail-transport-agent");
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(main.as_bytes()).unwrap();
    let main_xz = xz.finish().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(contrib.as_bytes()).unwrap();
    let contrib_gz = gz.finish().unwrap();
    let release = format!(
        "Origin: Test\nSuite: testing\nCodename: testing\nDate: Mon, 01 Jan 2024 00:00:00 UTC\nAcquire-By-Hash: yes\nArchitectures: amd64\nComponents: main contrib\nSHA256:\n {} {} main/binary-amd64/Packages.xz\n {} {} contrib/binary-amd64/Packages.gz\n",
        sha(&main_xz),
        main_xz.len(),
        sha(&contrib_gz),
        contrib_gz.len()
    );
    let key = key(11);
    let inrelease = CleartextSignedMessage::sign(
        rand::rngs::StdRng::seed_from_u64(1),
        &release,
        &*key,
        &Password::empty(),
    )
    .unwrap()
    .to_armored_string(Default::default())
    .unwrap();
    let mut files = HashMap::new();
    files.insert(
        "/debian/dists/testing/InRelease".to_string(),
        inrelease.into_bytes(),
    );
    files.insert(
        format!(
            "/debian/dists/testing/main/binary-amd64/by-hash/SHA256/{}",
            sha(&main_xz)
        ),
        main_xz,
    );
    files.insert(
        "/debian/dists/testing/contrib/binary-amd64/Packages.gz".to_string(),
        contrib_gz,
    );
    for (name, version) in [
        ("app", "1.0-1"),
        ("libfoo", "1.2-1"),
        ("libc6", "2.36-9"),
        ("libc6-old", "2.31-1"),
        ("postfix", "3.7-1"),
    ] {
        files.insert(
            format!("/debian/pool/main/{name}_{version}_amd64.deb"),
            deb(name),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let keyring = write_keyring(dir.path(), "test-archive.gpg", &key);
    Fixture {
        server: Server::start(files),
        key,
        dir,
        keyring,
    }
}

fn cache_entries(cache: &Cache) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.dir().join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn open_resolve_lock_fetch_then_rebuild_offline_without_network() {
    let fx = fixture();
    let cache = fx.cache();
    let archive = Archive::open(&fx.spec(), &cache, false).unwrap();
    assert_eq!(archive.index().len(), 5, "main + contrib merged");
    let reqs = fx.server.requests();
    assert!(
        reqs.iter().any(|r| r.contains("/by-hash/SHA256/")),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.ends_with("contrib/binary-amd64/Packages.gz")),
        "by-hash 404 falls back: {reqs:?}"
    );

    let res = resolve(archive.index(), &["app".to_string()], &[]).unwrap();
    let names: Vec<&str> = res.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["app", "libc6", "libfoo", "postfix"]);

    let lock = Lockfile::from_resolution(&archive, &res);
    assert_eq!(lock.archive().release_date, "Mon, 01 Jan 2024 00:00:00 UTC");
    assert_eq!(lock.archive().release_sha256, archive.release_sha256());
    let lock_path = fx.dir.path().join("image.lock");
    lock.write(&lock_path).unwrap();
    let lock = Lockfile::read(&lock_path).unwrap();

    let fetched = fetch(lock.packages(), &lock.archive().url, &cache, false).unwrap();
    assert_eq!(fetched.len(), 4);
    for f in &fetched {
        assert_eq!(std::fs::read(&f.path).unwrap(), deb(&f.package.name));
        assert_eq!(f.path, cache.path_for(&f.package.sha256));
    }

    // Warm rebuild from the lockfile: no request at all, online or offline.
    let before = fx.server.requests().len();
    let again = fetch(lock.packages(), &lock.archive().url, &cache, false).unwrap();
    assert_eq!(again, fetched);
    let offline = fetch(lock.packages(), &lock.archive().url, &cache, true).unwrap();
    assert_eq!(offline, fetched);
    // Resolving offline from the cached, re-verified indices.
    let off = Archive::open(&fx.spec(), &cache, true).unwrap();
    assert!(lock.matches_release(&off));
    assert_eq!(
        resolve(off.index(), &["app".to_string()], &[]).unwrap(),
        res
    );
    assert_eq!(
        fx.server.requests().len(),
        before,
        "no network on warm rebuild"
    );

    // A corrupted cache entry is detected and fetched again.
    std::fs::write(&fetched[0].path, b"bit rot").unwrap();
    fetch(lock.packages(), &lock.archive().url, &cache, false).unwrap();
    assert_eq!(
        std::fs::read(&fetched[0].path).unwrap(),
        deb(&fetched[0].package.name)
    );
    assert_eq!(fx.server.requests().len(), before + 1);
}

#[test]
fn tampered_deb_is_rejected_and_cache_stays_clean() {
    let fx = fixture();
    let cache = fx.cache();
    let archive = Archive::open(&fx.spec(), &cache, false).unwrap();
    let res = resolve(archive.index(), &["libfoo".to_string()], &[]).unwrap();
    let lock = Lockfile::from_resolution(&archive, &res);
    let entries_before = cache_entries(&cache);
    fx.server
        .set("/debian/pool/main/libfoo_1.2-1_amd64.deb", b"evil".to_vec());
    let err = fetch(lock.packages(), &lock.archive().url, &cache, false).unwrap_err();
    let msg = err.to_string();
    let libfoo = lock.packages().iter().find(|p| p.name == "libfoo").unwrap();
    assert!(
        msg.contains(&format!(
            "{}/pool/main/libfoo_1.2-1_amd64.deb",
            fx.server.url
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&libfoo.sha256) && msg.contains(&sha(b"evil")),
        "{msg}"
    );
    let after = cache_entries(&cache);
    assert!(!after.contains(&libfoo.sha256));
    assert!(
        after.iter().all(|e| !e.starts_with('.')),
        "no partial files: {after:?}"
    );
    // libc6 downloaded fine alongside.
    assert_eq!(after.len(), entries_before.len() + 1, "{after:?}");
}

#[test]
fn tampered_index_is_rejected() {
    let fx = fixture();
    let cache = fx.cache();
    fx.server.set(
        "/debian/dists/testing/contrib/binary-amd64/Packages.gz",
        b"junk".to_vec(),
    );
    let err = Archive::open(&fx.spec(), &cache, false).unwrap_err();
    assert!(matches!(err, Error::IndexMismatch(_)), "{err}");
    let url = &fx.server.url;
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "Packages index {url}/dists/testing/contrib/binary-amd64/Packages.gz does not match \
             the signed {url}/dists/testing/InRelease: expected sha256 "
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "got sha256 {} (4 bytes) from {url}/dists/testing/contrib/binary-amd64/Packages.gz; \
             the mirror served other data than the archive signed (corrupt or tampered with), \
             nothing was cached",
            sha(b"junk")
        )),
        "{msg}"
    );
    // A mismatch is not an unreachable archive: no --offline hint.
    assert!(!msg.contains("offline"), "{msg}");
}

#[test]
fn tampered_by_hash_index_names_the_index_not_only_its_hash() {
    let fx = fixture();
    let cache = fx.cache();
    let by_hash = fx
        .server
        .files
        .lock()
        .unwrap()
        .keys()
        .find(|k| k.contains("/by-hash/"))
        .cloned()
        .unwrap();
    fx.server.set(&by_hash, b"tampered".to_vec());
    let err = Archive::open(&fx.spec(), &cache, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::IndexMismatch(_)), "{msg}");
    let url = &fx.server.url;
    assert!(
        msg.starts_with(&format!(
            "Packages index {url}/dists/testing/main/binary-amd64/Packages.xz does not match the \
             signed {url}/dists/testing/InRelease"
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "from {url}/dists/testing/main/binary-amd64/by-hash/SHA256/"
        )),
        "{msg}"
    );
    assert!(!msg.contains("offline"), "{msg}");
    assert!(cache_entries(&cache).is_empty(), "tampered index cached");
}

#[test]
fn wrong_keyring_or_tampered_inrelease_fails() {
    let fx = fixture();
    let cache = fx.cache();
    let mut spec = fx.spec();
    spec.keyring = write_keyring(fx.dir.path(), "other.gpg", &key(12));
    let err = Archive::open(&spec, &cache, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Signature(_)), "{msg}");
    assert!(
        msg.contains("dists/testing/InRelease") && msg.contains("other.gpg"),
        "{msg}"
    );

    let path = "/debian/dists/testing/InRelease";
    let original = String::from_utf8(fx.server.files.lock().unwrap()[path].clone()).unwrap();
    fx.server.set(
        path,
        original
            .replace("Codename: testing", "Codename: evil")
            .into_bytes(),
    );
    let err = Archive::open(&fx.spec(), &cache, false).unwrap_err();
    assert!(matches!(err, Error::Signature(_)), "{err}");
    assert!(
        cache
            .load_release(&fx.server.url, "testing")
            .unwrap()
            .is_none(),
        "bad InRelease not cached"
    );

    // A correctly signed Release of another suite, served under this one.
    fx.server
        .set("/debian/dists/stable/InRelease", original.into_bytes());
    let mut stable = fx.spec();
    stable.suite = "stable".into();
    let err = Archive::open(&stable, &cache, false).unwrap_err();
    assert!(matches!(err, Error::SuiteMismatch { .. }), "{err}");
    assert!(err.to_string().contains("not \"stable\""), "{err}");
    drop(fx.key);
}

#[test]
fn offline_lists_exactly_what_is_missing() {
    let fx = fixture();
    let cache = fx.cache();
    let err = Archive::open(&fx.spec(), &cache, true).unwrap_err();
    assert!(matches!(err, Error::OfflineNoRelease { .. }), "{err}");
    assert!(
        err.to_string().contains("run once without --offline"),
        "{err}"
    );

    let locked = vec![LockedPackage {
        name: "libfoo".into(),
        version: "1.2-1".into(),
        architecture: "amd64".into(),
        filename: "pool/main/libfoo_1.2-1_amd64.deb".into(),
        size: deb("libfoo").len() as u64,
        sha256: sha(&deb("libfoo")),
    }];
    let err = fetch(&locked, &fx.server.url, &cache, true).unwrap_err();
    let Error::OfflineMissing { missing, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(missing.len(), 1);
    let msg = err.to_string();
    assert!(
        msg.contains("libfoo 1.2-1") && msg.contains(&locked[0].sha256),
        "{msg}"
    );
    assert!(fx.server.requests().is_empty(), "offline made requests");
}

#[test]
fn unreachable_archive_names_url_and_suggests_offline() {
    let fx = fixture();
    let cache = fx.cache();
    Archive::open(&fx.spec(), &cache, false).unwrap();
    let spec = fx.spec();
    drop(fx.server); // port now closed
    let err = Archive::open(&spec, &cache, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Http { .. }), "{msg}");
    assert!(msg.contains(&spec.inrelease_url()), "{msg}");
    assert!(msg.contains("--offline"), "{msg}");
    // And offline works from what was cached.
    assert!(Archive::open(&spec, &cache, true).is_ok());
}

#[test]
fn unreachable_archive_not_in_the_cache_gets_no_offline_hint() {
    // The cache holds another archive's downloads, but not this one's
    // InRelease: --offline could not help, so it is not suggested.
    let fx = fixture();
    let cache = fx.cache();
    Archive::open(&fx.spec(), &cache, false).unwrap();
    assert!(cache.has_entries());
    let mut other = fx.spec();
    other.suite = "unstable".into();
    drop(fx.server); // port now closed
    let err = Archive::open(&other, &cache, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Http { .. }), "{msg}");
    assert!(msg.contains(&other.inrelease_url()), "{msg}");
    assert!(!msg.contains("offline"), "{msg}");
}

#[test]
fn transient_server_errors_are_retried_but_not_found_is_not() {
    let fx = fixture();
    let cache = fx.cache();
    let archive = Archive::open(&fx.spec(), &cache, false).unwrap();
    let res = resolve(archive.index(), &["libc6".to_string()], &[]).unwrap();
    let lock = Lockfile::from_resolution(&archive, &res);
    let path = "/debian/pool/main/libc6_2.36-9_amd64.deb";
    fx.server.fail_once.lock().unwrap().push(path.into());
    let fetched = fetch(lock.packages(), &lock.archive().url, &cache, false).unwrap();
    assert_eq!(std::fs::read(&fetched[0].path).unwrap(), deb("libc6"));
    let hits = fx.server.requests().iter().filter(|r| *r == path).count();
    assert_eq!(hits, 2, "503 then success");

    let mut gone = lock.packages().to_vec();
    gone[0].filename = "pool/main/gone_1_amd64.deb".into();
    gone[0].sha256 = sha(b"gone");
    let err = fetch(&gone, &lock.archive().url, &cache, false).unwrap_err();
    assert!(
        err.to_string()
            .contains("/debian/pool/main/gone_1_amd64.deb: HTTP status 404"),
        "{err}"
    );
    let hits = fx
        .server
        .requests()
        .iter()
        .filter(|r| r.ends_with("gone_1_amd64.deb"))
        .count();
    assert_eq!(hits, 1, "404 is not retried");
}
