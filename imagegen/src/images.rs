//! Container images for an air-gapped `kubeadm init`: read from OCI
//! archives in `--components-dir DIR/images/*.tar` (as `ctr images export`
//! or `skopeo copy ... oci-archive:` write them), checked against the
//! profile's digest-pinned references, and merged into the one OCI archive
//! the image carries ([`IMAGES_ARCHIVE_PATH`]), which the agent imports with
//! `ctr -n k8s.io images import` before kubeadm runs.
//!
//! An archive names an image in its `index.json` by the annotation
//! `io.containerd.image.name` (ctr) or `org.opencontainers.image.ref.name`
//! (skopeo, when given the full reference); the entry's digest must be the
//! pinned one. Every blob copied is checked against its own digest. The
//! output is deterministic: sorted entries, fixed timestamp, owner 0.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use thiserror::Error;

use crate::components::sha256_hex;
use crate::profile::ImageRef;

/// Where the merged archive is baked.
pub const IMAGES_ARCHIVE_PATH: &str = "/usr/lib/kubeboot/images.oci.tar";
/// The annotation containerd reads the image name from.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for a reference name.
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Errors collecting the images.
#[derive(Debug, Error)]
pub enum ImagesError {
    /// No registry client: images come only from a components directory.
    #[error(
        "the profile pins {count} container images ({first}, ...); imagegen does not pull \
         from registries: pass --components-dir DIR with the images saved as OCI archives in \
         DIR/images/*.tar (imagegen/README.md, \"Air-gapped components\"), or \
         --without-kubernetes"
    )]
    NoDirectory {
        /// How many images are declared.
        count: usize,
        /// The first one.
        first: String,
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

/// Checks every pinned image is in `dir/images/*.tar` and returns the merged
/// OCI archive: the declared images only in `index.json` (named by both
/// annotations), and the blobs of the archives that carry them.
pub fn collect(dir: &Path, images: &[ImageRef], mtime: u64) -> Result<Vec<u8>, ImagesError> {
    let mut archives = Vec::new();
    for p in archive_paths(dir)? {
        archives.push(read_archive(&p)?);
    }
    let mut manifests = Vec::new();
    let mut used: Vec<usize> = Vec::new();
    for image in images {
        let mut found = None;
        for (i, a) in archives.iter().enumerate() {
            for (names, digest, desc) in entries(&a.index) {
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
                found = Some((i, desc));
            }
        }
        let Some((i, mut desc)) = found else {
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
        let hex = image.digest.trim_start_matches("sha256:");
        if !archives[i]
            .blobs
            .contains_key(&format!("blobs/sha256/{hex}"))
        {
            return Err(ImagesError::Format {
                archive: archives[i].path.clone(),
                message: format!("{} is named but its blob {hex} is missing", image.name),
            });
        }
        let tag = image
            .name
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map(|(_, t)| t.to_owned())
            .unwrap_or_else(|| image.name.clone());
        if let Some(obj) = desc.as_object_mut() {
            obj.insert(
                "annotations".into(),
                json!({ CONTAINERD_NAME: image.name, OCI_REF_NAME: tag }),
            );
        }
        manifests.push(desc);
        if !used.contains(&i) {
            used.push(i);
        }
    }
    let mut blobs: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for i in used {
        for (k, v) in &archives[i].blobs {
            blobs.insert(k, v);
        }
    }
    let index = json!({ "schemaVersion": 2, "manifests": manifests });
    let index = serde_json::to_vec(&index).map_err(|e| ImagesError::Format {
        archive: dir.to_owned(),
        message: e.to_string(),
    })?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let mut files: Vec<(&str, &[u8])> = vec![("oci-layout", layout), ("index.json", &index)];
    files.extend(blobs);
    write_tar(&files, mtime).map_err(|source| ImagesError::Io {
        what: "writing the merged archive for",
        path: dir.to_owned(),
        source,
    })
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

/// Writes a minimal OCI archive with one image: a config blob and an
/// empty-layer manifest, named `name` (tests and examples).
pub fn tiny_archive(name: &str, mtime: u64) -> std::io::Result<(Vec<u8>, String)> {
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_size(2);
        b.append_data(&mut h, "hello", &b"hi"[..])?;
        b.into_inner()?
    };
    let layer_hex = sha256_hex(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_hex}")] },
    }))
    .map_err(std::io::Error::other)?;
    let config_hex = sha256_hex(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
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
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest.len(),
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": { CONTAINERD_NAME: name },
        }],
    }))
    .map_err(std::io::Error::other)?;
    let paths = [
        format!("blobs/sha256/{layer_hex}"),
        format!("blobs/sha256/{config_hex}"),
        format!("blobs/sha256/{manifest_hex}"),
    ];
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let files: Vec<(&str, &[u8])> = vec![
        ("oci-layout", layout),
        ("index.json", &index),
        (&paths[0], &layer),
        (&paths[1], &config),
        (&paths[2], &manifest),
    ];
    Ok((write_tar(&files, mtime)?, format!("sha256:{manifest_hex}")))
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
