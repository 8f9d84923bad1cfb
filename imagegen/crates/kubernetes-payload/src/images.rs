//! Container images for an air-gapped `kubeadm init`, merged into the one
//! OCI archive the image carries ([`IMAGES_ARCHIVE_PATH`]), which the agent
//! imports with `ctr -n k8s.io images import` before kubeadm runs.
//!
//! Two sources give the same content, so the same pinned images give a
//! bit-identical archive from either:
//!
//! * **upstream download** ([`from_registry`], the default): the
//!   profile's digest-pinned references pulled with [`crate::registry`]
//!   (mirrors honoured, blobs cached content-addressed, `--offline` from the
//!   cache only);
//! * **a components directory** ([`from_directory`]): OCI archives in
//!   `--components-dir DIR/images/*.tar` (as `ctr images export` or
//!   `skopeo copy ... oci-archive:` write them). An archive names an image
//!   in its `index.json` by the annotation `io.containerd.image.name` (ctr)
//!   or `org.opencontainers.image.ref.name` (skopeo, when given the full
//!   reference); the entry's digest must be the pinned one.
//!
//! From the pinned digest both walk the same way ([`walk`]): the top blob;
//! if it is an index (OCI or Docker list), its linux/amd64 manifest; then
//! that manifest's config and layers. Every blob is checked against its
//! digest. [`merge`] writes what was walked (and nothing else) as a
//! deterministic OCI archive: sorted entries, fixed timestamp, owner 0, one
//! `index.json` entry per pinned image named by both annotations.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use thiserror::Error;

use profile::ImageRef;

use crate::registry::{self, Kind, Reference, RegistryError};
use crate::sha256_hex;

/// Where the merged archive is baked.
pub const IMAGES_ARCHIVE_PATH: &str = "/usr/lib/kubeboot/images.oci.tar";
/// The annotation containerd reads the image name from.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for a reference name.
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Errors collecting the images.
#[derive(Debug, Error)]
pub enum ImagesError {
    /// Pulling from a registry failed (unreachable, HTTP error, digest
    /// mismatch, corrupt cache).
    #[error("image {name}: {cause}{}", registry_hint(cause))]
    Registry {
        /// Reference.
        name: String,
        /// Why (not a `source`: the message already says it).
        cause: RegistryError,
    },
    /// `--offline` and pinned images are not (fully) in the cache.
    #[error(
        "--offline: not in the cache: {}; build once without --offline to fill the cache, \
         or choose another source: --components-dir DIR or --kubernetes none",
        missing.join("; ")
    )]
    NotCached {
        /// Each image with the first blob it lacks.
        missing: Vec<String>,
    },
    /// An index has no linux/amd64 manifest.
    #[error("image {name}@{digest}: the index has no linux/amd64 manifest (it has {available})")]
    Platform {
        /// Reference.
        name: String,
        /// The index digest.
        digest: String,
        /// The platforms it lists.
        available: String,
    },
    /// A manifest is not one imagegen can bake.
    #[error("image {name}: {digest}: {message}")]
    Manifest {
        /// Reference.
        name: String,
        /// The manifest's digest.
        digest: String,
        /// What is wrong.
        message: String,
    },
    /// A declared image is in no archive.
    #[error(
        "image {name}@{digest} is in none of the archives in {} ({found}); save it with \
         `ctr images pull {name}@{digest}` and `ctr images export`", dir.display()
    )]
    Missing {
        /// Reference.
        name: String,
        /// Pinned digest.
        digest: String,
        /// The directory searched.
        dir: PathBuf,
        /// The names the archives do carry.
        found: String,
    },
    /// An archive carries the image under another digest.
    #[error(
        "image {name}: {} has digest {actual}, the profile pins {expected}; refusing it",
        archive.display()
    )]
    Digest {
        /// Reference.
        name: String,
        /// The archive.
        archive: PathBuf,
        /// Pinned digest.
        expected: String,
        /// Digest in the archive.
        actual: String,
    },
    /// A blob's content does not match its name.
    #[error("{}: blob {path} has SHA256 {actual}; the archive is corrupt", archive.display())]
    Blob {
        /// The archive.
        archive: PathBuf,
        /// The entry.
        path: String,
        /// Its content's hash.
        actual: String,
    },
    /// The archive is not an OCI layout.
    #[error("{}: {message}", archive.display())]
    Format {
        /// The archive.
        archive: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One archive read into memory.
struct Archive {
    path: PathBuf,
    index: Value,
    blobs: BTreeMap<String, Vec<u8>>,
}

fn read_archive(path: &Path) -> Result<Archive, ImagesError> {
    let io = |what, source| ImagesError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let format = |message: String| ImagesError::Format {
        archive: path.to_owned(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| io("opening", e))?;
    let mut tar = tar::Archive::new(file);
    let mut index = None;
    let mut blobs = BTreeMap::new();
    for entry in tar.entries().map_err(|e| io("reading", e))? {
        let mut entry = entry.map_err(|e| io("reading", e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| io("reading", e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| io("reading", e))?;
        if name == "index.json" {
            index = Some(
                serde_json::from_slice::<Value>(&data)
                    .map_err(|e| format(format!("index.json: {e}")))?,
            );
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let actual = sha256_hex(&data);
            if actual != hex {
                return Err(ImagesError::Blob {
                    archive: path.to_owned(),
                    path: name,
                    actual,
                });
            }
            blobs.insert(name, data);
        }
    }
    let index = index.ok_or_else(|| format("no index.json: not an OCI archive".into()))?;
    Ok(Archive {
        path: path.to_owned(),
        index,
        blobs,
    })
}

/// The `index.json` manifests of an archive: (names, digest, descriptor).
fn entries(index: &Value) -> Vec<(Vec<String>, String, Value)> {
    let Some(list) = index.get("manifests").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|d| {
            let names = [CONTAINERD_NAME, OCI_REF_NAME]
                .iter()
                .filter_map(|k| d.pointer(&format!("/annotations/{}", k.replace('/', "~1"))))
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            let digest = d
                .get("digest")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (names, digest, d.clone())
        })
        .collect()
}

/// The archives in `dir/images/`, sorted by name.
fn archive_paths(dir: &Path) -> Result<Vec<PathBuf>, ImagesError> {
    let images = dir.join("images");
    let read = std::fs::read_dir(&images).map_err(|source| ImagesError::Io {
        what: "listing",
        path: images.clone(),
        source,
    })?;
    let mut paths = Vec::new();
    for e in read {
        let e = e.map_err(|source| ImagesError::Io {
            what: "listing",
            path: images.clone(),
            source,
        })?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "tar") && p.is_file() {
            paths.push(p);
        }
    }
    paths.sort();
    Ok(paths)
}

/// The sources' common choices, said by every "cannot get the images" error.
pub const SOURCE_CHOICES: &str = crate::components::SOURCE_CHOICES;

fn registry_hint(e: &RegistryError) -> String {
    match e {
        RegistryError::Unreachable { .. } | RegistryError::Status { .. } => {
            format!(". {SOURCE_CHOICES}")
        }
        _ => String::new(),
    }
}

impl ImagesError {
    /// What was unreachable (a URL) when the error is "upstream
    /// unreachable" (DNS, connect, timeout); `None` for every other error
    /// (a digest mismatch, an HTTP 404, a corrupt cache, `--offline`).
    pub fn unreachable(&self) -> Option<String> {
        match self {
            ImagesError::Registry { cause, .. } => cause.unreachable().map(str::to_owned),
            _ => None,
        }
    }
}

/// One pinned image as the merged archive carries it: its `index.json`
/// descriptor and the blobs reachable for linux/amd64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageContent {
    /// The reference without the digest (the name baked).
    pub name: String,
    /// Media type of the top blob (index or manifest).
    pub media_type: String,
    /// The pinned digest.
    pub digest: String,
    /// Size of the top blob.
    pub size: u64,
    /// Blobs by hex SHA256: the top blob, the amd64 manifest of an index,
    /// the config and the layers.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

/// The media type of a manifest or index, from its `mediaType` field or,
/// for OCI content that omits it, from its shape.
fn media_type(v: &Value) -> Result<String, String> {
    if v.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
        return Err("a Docker schema 1 manifest: not supported".into());
    }
    match v.get("mediaType").and_then(Value::as_str) {
        Some(m)
            if [
                registry::OCI_INDEX,
                registry::DOCKER_LIST,
                registry::OCI_MANIFEST,
                registry::DOCKER_MANIFEST,
            ]
            .contains(&m) =>
        {
            Ok(m.to_owned())
        }
        Some(m) => Err(format!("media type {m} is not an image index or manifest")),
        None if v.get("manifests").is_some() => Ok(registry::OCI_INDEX.to_owned()),
        None if v.get("config").is_some() => Ok(registry::OCI_MANIFEST.to_owned()),
        None => Err("neither an image index nor an image manifest".into()),
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == registry::OCI_INDEX || media_type == registry::DOCKER_LIST
}

/// The digest of an index's linux/amd64 manifest (one without a variant
/// first), or the platforms it does list.
fn pick_amd64(index: &Value) -> Result<String, String> {
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let platform = |d: &Value, k: &str| {
        d.pointer(&format!("/platform/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut candidates: Vec<&Value> = list
        .iter()
        .filter(|d| platform(d, "os") == "linux" && platform(d, "architecture") == "amd64")
        .collect();
    candidates.sort_by_key(|d| !platform(d, "variant").is_empty());
    match candidates
        .first()
        .and_then(|d| d.get("digest"))
        .and_then(Value::as_str)
    {
        Some(d) => Ok(d.to_owned()),
        None => Err(list
            .iter()
            .map(|d| format!("{}/{}", platform(d, "os"), platform(d, "architecture")))
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

/// A source's way to get a manifest or blob by digest.
pub type Fetch<'a> = dyn FnMut(Kind, &str) -> Result<Vec<u8>, ImagesError> + 'a;

/// Walks one pinned image from its digest: `fetch` returns the bytes of a
/// manifest or blob by digest (the source's own way); each is checked
/// against its digest here too.
pub fn walk(image: &ImageRef, fetch: &mut Fetch<'_>) -> Result<ImageContent, ImagesError> {
    let mut blobs = BTreeMap::new();
    let manifest_err = |digest: &str, message: String| ImagesError::Manifest {
        name: image.name.clone(),
        digest: digest.to_owned(),
        message,
    };
    let mut get = |kind: Kind, digest: &str| -> Result<Vec<u8>, ImagesError> {
        let hex = registry::sha256_of(digest)
            .map_err(|e| manifest_err(digest, e.to_string()))?
            .to_owned();
        let data = fetch(kind, digest)?;
        let actual = sha256_hex(&data);
        if actual != hex {
            return Err(manifest_err(
                digest,
                format!("the content has SHA256 {actual}; refusing it"),
            ));
        }
        blobs.insert(hex, data.clone());
        Ok(data)
    };
    let parse = |digest: &str, data: &[u8]| {
        serde_json::from_slice::<Value>(data)
            .map_err(|e| manifest_err(digest, format!("not JSON: {e}")))
    };
    let top = get(Kind::Manifest, &image.digest)?;
    let top_value = parse(&image.digest, &top)?;
    let top_type = media_type(&top_value).map_err(|m| manifest_err(&image.digest, m))?;
    let (manifest_digest, manifest) = if is_index(&top_type) {
        let d = pick_amd64(&top_value).map_err(|available| ImagesError::Platform {
            name: image.name.clone(),
            digest: image.digest.clone(),
            available,
        })?;
        let data = get(Kind::Manifest, &d)?;
        let v = parse(&d, &data)?;
        (d, v)
    } else {
        (image.digest.clone(), top_value)
    };
    let m_type = media_type(&manifest).map_err(|m| manifest_err(&manifest_digest, m))?;
    if is_index(&m_type) {
        return Err(manifest_err(
            &manifest_digest,
            "an index inside an index: not supported".into(),
        ));
    }
    let config = manifest
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .ok_or_else(|| manifest_err(&manifest_digest, "no config digest".into()))?
        .to_owned();
    let layers: Vec<String> = manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| manifest_err(&manifest_digest, "no layers".into()))?
        .iter()
        .map(|l| {
            l.get("digest")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| manifest_err(&manifest_digest, "a layer has no digest".into()))
        })
        .collect::<Result<_, _>>()?;
    get(Kind::Blob, &config)?;
    for l in &layers {
        get(Kind::Blob, l)?;
    }
    Ok(ImageContent {
        name: image.name.clone(),
        media_type: top_type,
        digest: image.digest.clone(),
        size: top.len() as u64,
        blobs,
    })
}

/// Every image the OCI archives in `dir/images/*.tar` carry, pinned by the
/// digest of its `index.json` entry, sorted by name: the entry's
/// `io.containerd.image.name`, else an `org.opencontainers.image.ref.name`
/// that is a reference (`ctr` writes the bare tag there). An entry without
/// a reference, or one reference under two digests, is an error naming the
/// archive (`imagegen pins`).
pub fn named_in_directory(dir: &Path) -> Result<Vec<ImageRef>, ImagesError> {
    let mut found: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    for path in archive_paths(dir)? {
        let archive = read_archive(&path)?;
        for (names, digest, _) in entries(&archive.index) {
            let Some(name) = names
                .into_iter()
                .find(|n| n.contains('/') || n.contains(':'))
            else {
                return Err(ImagesError::Format {
                    archive: path.clone(),
                    message: format!(
                        "the index.json entry {digest} names no image (no {CONTAINERD_NAME} \
                         annotation, no full reference in {OCI_REF_NAME}); export it with \
                         `ctr images export` or `skopeo copy ... oci-archive:FILE:NAME:TAG`"
                    ),
                });
            };
            if let Some((other, other_path)) = found.get(&name) {
                if *other != digest {
                    return Err(ImagesError::Format {
                        archive: path.clone(),
                        message: format!(
                            "{name} has digest {digest} here and {other} in {}: keep one",
                            other_path.display()
                        ),
                    });
                }
            }
            found.insert(name, (digest, path.clone()));
        }
    }
    Ok(found
        .into_iter()
        .map(|(name, (digest, _))| ImageRef { name, digest })
        .collect())
}

/// The pinned images from the OCI archives in `dir/images/*.tar`, each
/// checked against its pinned digest.
pub fn from_directory(dir: &Path, images: &[ImageRef]) -> Result<Vec<ImageContent>, ImagesError> {
    let mut archives = Vec::new();
    for p in archive_paths(dir)? {
        archives.push(read_archive(&p)?);
    }
    let mut out = Vec::new();
    for image in images {
        let mut found = None;
        for (i, a) in archives.iter().enumerate() {
            for (names, digest, _) in entries(&a.index) {
                if !names.contains(&image.name) {
                    continue;
                }
                if digest != image.digest {
                    return Err(ImagesError::Digest {
                        name: image.name.clone(),
                        archive: a.path.clone(),
                        expected: image.digest.clone(),
                        actual: digest,
                    });
                }
                found = Some(i);
            }
        }
        let Some(i) = found else {
            let found: Vec<String> = archives
                .iter()
                .flat_map(|a| entries(&a.index))
                .flat_map(|(n, d, _)| n.into_iter().map(move |n| format!("{n}@{d}")))
                .collect();
            return Err(ImagesError::Missing {
                name: image.name.clone(),
                digest: image.digest.clone(),
                dir: dir.join("images"),
                found: if found.is_empty() {
                    "they name no image".into()
                } else {
                    format!("they carry {}", found.join(", "))
                },
            });
        };
        let archive = &archives[i];
        out.push(walk(image, &mut |_, digest| {
            let hex = digest.trim_start_matches("sha256:");
            archive
                .blobs
                .get(&format!("blobs/sha256/{hex}"))
                .cloned()
                .ok_or_else(|| ImagesError::Format {
                    archive: archive.path.clone(),
                    message: format!("{} needs blob {digest}, which is missing", image.name),
                })
        })?);
    }
    Ok(out)
}

/// The pinned images pulled from their registries (or mirrors) through
/// `client`, which caches every blob. Offline, every image lacking a blob
/// is named in one error.
pub fn from_registry(
    client: &registry::Client,
    images: &[ImageRef],
) -> Result<Vec<ImageContent>, ImagesError> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for image in images {
        let wrap = |cause| ImagesError::Registry {
            name: image.name.clone(),
            cause,
        };
        let reference = Reference::parse(&image.name).map_err(wrap)?;
        let pulled = walk(image, &mut |kind, digest| {
            client.get(&reference, kind, digest).map_err(wrap)
        });
        match pulled {
            Ok(c) => out.push(c),
            Err(ImagesError::Registry {
                name,
                cause: RegistryError::NotCached { digest, path, .. },
            }) => missing.push(format!(
                "{name}@{} needs {digest} ({})",
                image.digest,
                path.display()
            )),
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        return Err(ImagesError::NotCached { missing });
    }
    Ok(out)
}

/// Writes the merged OCI archive: one `index.json` entry per image (named
/// by both annotations; the tag alone as the OCI ref name), and every blob
/// walked, once.
pub fn merge(images: &[ImageContent], mtime: u64) -> Result<Vec<u8>, ImagesError> {
    let mut manifests = Vec::new();
    let mut blobs: BTreeMap<String, &[u8]> = BTreeMap::new();
    for image in images {
        let tag = image
            .name
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map(|(_, t)| t.to_owned())
            .unwrap_or_else(|| image.name.clone());
        manifests.push(json!({
            "mediaType": image.media_type,
            "digest": image.digest,
            "size": image.size,
            "annotations": { CONTAINERD_NAME: image.name, OCI_REF_NAME: tag },
        }));
        for (hex, data) in &image.blobs {
            blobs.insert(format!("blobs/sha256/{hex}"), data);
        }
    }
    let archive = || PathBuf::from(IMAGES_ARCHIVE_PATH);
    let index = json!({ "schemaVersion": 2, "manifests": manifests });
    let index = serde_json::to_vec(&index).map_err(|e| ImagesError::Format {
        archive: archive(),
        message: e.to_string(),
    })?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let mut files: Vec<(&str, &[u8])> = vec![("oci-layout", layout), ("index.json", &index)];
    files.extend(blobs.iter().map(|(k, v)| (k.as_str(), *v)));
    write_tar(&files, mtime).map_err(|source| ImagesError::Io {
        what: "writing",
        path: archive(),
        source,
    })
}

/// The directory source in one call: [`from_directory`] then [`merge`].
pub fn collect(dir: &Path, images: &[ImageRef], mtime: u64) -> Result<Vec<u8>, ImagesError> {
    merge(&from_directory(dir, images)?, mtime)
}

fn write_tar(files: &[(&str, &[u8])], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<&str> = Vec::new();
    for (path, _) in files {
        let mut p = *path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !dirs.contains(&parent) {
                dirs.push(parent);
            }
            p = parent;
        }
    }
    dirs.sort();
    for d in dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(mtime);
        h.set_size(0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())?;
    }
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data)?;
    }
    b.into_inner()
}

/// A test image's blobs (path, bytes), manifest digest and manifest size.
type TinyImage = (Vec<(String, Vec<u8>)>, String, usize);

/// The blobs of a minimal one-layer image for `arch`: (path, bytes) of the
/// layer, config and manifest, and the manifest's digest and size.
fn tiny_image(arch: &str, mtime: u64) -> std::io::Result<TinyImage> {
    let content: &[u8] = if arch == "amd64" { b"hi" } else { b"hi arm" };
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_size(content.len() as u64);
        b.append_data(&mut h, "hello", content)?;
        b.into_inner()?
    };
    let layer_hex = sha256_hex(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_hex}")] },
    }))
    .map_err(std::io::Error::other)?;
    let config_hex = sha256_hex(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": registry::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_hex}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_hex}"),
            "size": layer.len(),
        }],
    }))
    .map_err(std::io::Error::other)?;
    let manifest_hex = sha256_hex(&manifest);
    let size = manifest.len();
    Ok((
        vec![
            (format!("blobs/sha256/{layer_hex}"), layer),
            (format!("blobs/sha256/{config_hex}"), config),
            (format!("blobs/sha256/{manifest_hex}"), manifest),
        ],
        format!("sha256:{manifest_hex}"),
        size,
    ))
}

fn tiny_layout(
    index_entry: Value,
    blobs: &[(String, Vec<u8>)],
    mtime: u64,
) -> std::io::Result<Vec<u8>> {
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [index_entry] }))
        .map_err(std::io::Error::other)?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let mut files: Vec<(&str, &[u8])> = vec![("oci-layout", layout), ("index.json", &index)];
    files.extend(blobs.iter().map(|(p, d)| (p.as_str(), d.as_slice())));
    write_tar(&files, mtime)
}

/// Writes a minimal OCI archive with one image: a config blob and a
/// one-layer manifest, named `name` (tests and examples). Returns the
/// archive and the manifest digest.
pub fn tiny_archive(name: &str, mtime: u64) -> std::io::Result<(Vec<u8>, String)> {
    let (blobs, digest, size) = tiny_image("amd64", mtime)?;
    let entry = json!({
        "mediaType": registry::OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "platform": { "architecture": "amd64", "os": "linux" },
        "annotations": { CONTAINERD_NAME: name },
    });
    Ok((tiny_layout(entry, &blobs, mtime)?, digest))
}

/// Like [`tiny_archive`] but the image is an OCI index of two platforms,
/// linux/arm64 listed first and linux/amd64 second (tests of the platform
/// pick). Returns the archive, the index digest and the amd64 manifest
/// digest.
pub fn tiny_index_archive(name: &str, mtime: u64) -> std::io::Result<(Vec<u8>, String, String)> {
    let (arm, arm_digest, arm_size) = tiny_image("arm64", mtime)?;
    let (amd, amd_digest, amd_size) = tiny_image("amd64", mtime)?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": registry::OCI_INDEX,
        "manifests": [
            {
                "mediaType": registry::OCI_MANIFEST,
                "digest": arm_digest,
                "size": arm_size,
                "platform": { "architecture": "arm64", "os": "linux" },
            },
            {
                "mediaType": registry::OCI_MANIFEST,
                "digest": amd_digest,
                "size": amd_size,
                "platform": { "architecture": "amd64", "os": "linux" },
            },
        ],
    }))
    .map_err(std::io::Error::other)?;
    let index_hex = sha256_hex(&index);
    let entry = json!({
        "mediaType": registry::OCI_INDEX,
        "digest": format!("sha256:{index_hex}"),
        "size": index.len(),
        "annotations": { CONTAINERD_NAME: name },
    });
    let mut blobs = arm;
    blobs.extend(amd);
    blobs.push((format!("blobs/sha256/{index_hex}"), index));
    Ok((
        tiny_layout(entry, &blobs, mtime)?,
        format!("sha256:{index_hex}"),
        amd_digest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(names: &[&str]) -> (tempfile::TempDir, Vec<ImageRef>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        let mut refs = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let (tar, digest) = tiny_archive(n, i as u64).unwrap();
            std::fs::write(dir.path().join(format!("images/{i}.tar")), tar).unwrap();
            refs.push(ImageRef {
                name: (*n).to_owned(),
                digest,
            });
        }
        (dir, refs)
    }

    #[test]
    fn merged_archive_names_every_pinned_image() {
        let (dir, refs) = dir_with(&["r.example/pause:3.9", "r.example/dns:v1"]);
        let tar = collect(dir.path(), &refs, 7).unwrap();
        let out = dir.path().join("out.tar");
        std::fs::write(&out, &tar).unwrap();
        let a = read_archive(&out).unwrap();
        let e = entries(&a.index);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, ["r.example/pause:3.9", "3.9"]);
        assert_eq!(e[1].1, refs[1].digest);
        // Deterministic.
        assert_eq!(collect(dir.path(), &refs, 7).unwrap(), tar);
    }

    #[test]
    fn other_digest_is_refused_with_both() {
        let (dir, mut refs) = dir_with(&["r.example/pause:3.9"]);
        let actual = refs[0].digest.clone();
        refs[0].digest = format!("sha256:{}", "0".repeat(64));
        let err = collect(dir.path(), &refs, 0).unwrap_err();
        assert!(matches!(err, ImagesError::Digest { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&actual) && text.contains(&"0".repeat(64)),
            "{text}"
        );
    }

    #[test]
    fn missing_image_names_what_is_there() {
        let (dir, mut refs) = dir_with(&["r.example/pause:3.9"]);
        refs[0].name = "r.example/coredns:v1.11.1".into();
        let text = collect(dir.path(), &refs, 0).unwrap_err().to_string();
        assert!(text.contains("r.example/coredns:v1.11.1"), "{text}");
        assert!(text.contains("r.example/pause:3.9@sha256:"), "{text}");
    }

    /// A Docker manifest list whose amd64 entry carries a variant-less
    /// platform after an arm one; blobs served from a map.
    fn docker_list(amd64: bool) -> (ImageRef, BTreeMap<String, Vec<u8>>) {
        let mut blobs = BTreeMap::new();
        let mut put = |data: Vec<u8>| {
            let d = format!("sha256:{}", sha256_hex(&data));
            blobs.insert(d.clone(), data);
            d
        };
        let config = put(b"{}".to_vec());
        let layer = put(b"layer".to_vec());
        let manifest = put(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": registry::DOCKER_MANIFEST,
            "config": { "digest": config },
            "layers": [{ "digest": layer }],
        }))
        .unwrap());
        let arch = if amd64 { "amd64" } else { "s390x" };
        let list = put(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": registry::DOCKER_LIST,
            "manifests": [
                { "digest": format!("sha256:{}", "9".repeat(64)),
                  "platform": { "os": "linux", "architecture": "arm", "variant": "v7" } },
                { "digest": manifest, "platform": { "os": "linux", "architecture": arch } },
            ],
        }))
        .unwrap());
        (
            ImageRef {
                name: "docker.io/library/x:1".into(),
                digest: list,
            },
            blobs,
        )
    }

    #[test]
    fn docker_manifest_list_walks_to_its_amd64_manifest() {
        let (image, blobs) = docker_list(true);
        let mut asked = Vec::new();
        let content = walk(&image, &mut |kind, d| {
            asked.push((kind, d.to_owned()));
            Ok(blobs[d].clone())
        })
        .unwrap();
        assert_eq!(content.media_type, registry::DOCKER_LIST);
        assert_eq!(content.blobs.len(), 4);
        assert_eq!(asked[1].0, Kind::Manifest);
        assert_eq!(asked[2].0, Kind::Blob);
        assert!(!asked.iter().any(|(_, d)| d.contains("9999")));

        let (image, blobs) = docker_list(false);
        let err = walk(&image, &mut |_, d| Ok(blobs[d].clone())).unwrap_err();
        assert!(matches!(err, ImagesError::Platform { .. }), "{err}");
        assert!(err.to_string().contains("linux/s390x"), "{err}");
    }

    #[test]
    fn corrupt_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        let files: Vec<(&str, &[u8])> = vec![
            ("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
            ("blobs/sha256/aaaa", b"not it"),
        ];
        std::fs::write(
            dir.path().join("images/x.tar"),
            write_tar(&files, 0).unwrap(),
        )
        .unwrap();
        let err = collect(dir.path(), &[], 0).unwrap_err();
        assert!(matches!(err, ImagesError::Blob { .. }), "{err}");
    }
}
