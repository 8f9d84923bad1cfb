//! A test container image built here from Debian's busybox-static, as an
//! OCI image-layout archive that `ctr images import` reads, attached to a
//! guest as a read-only raw virtio disk ([`cri_disk_args`]) so the image
//! under test stays the one imagegen built. No registry is contacted.
//!
//! The archive holds two images on one layer (`/bin/busybox`, `/bin/sh`,
//! `/etc`, `/tmp`): [`BUSYBOX_IMAGE`] (command `/bin/sh`) and
//! [`PAUSE_IMAGE`], a pod sandbox stand-in that sleeps, for images that do
//! not carry kubeadm's pause image (built without Kubernetes). The guest's
//! self-test (`kubeboot-selftest`) imports it and runs `agent cri-check`.
//! Deterministic: fixed times and owners, sorted entries.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::HarnessError;

/// The image the CRI check runs.
pub const BUSYBOX_IMAGE: &str = "kubeboot.test/busybox:1";
/// The pod sandbox stand-in.
pub const PAUSE_IMAGE: &str = "kubeboot.test/pause:1";
/// The virtio serial the guest looks for.
pub const CRI_DISK_SERIAL: &str = "kubeboot-cri-test";

/// Where Debian's busybox-static installs the static busybox.
pub const BUSYBOX_STATIC: &str = "/bin/busybox";

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError {
    let path = path.to_owned();
    move |source| HarnessError::Io { what, path, source }
}

/// Whether `elf` is a statically linked ELF64 executable (no PT_INTERP
/// program header). Pure.
pub fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let phoff = elf
        .get(0x20..0x28)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    let (Some(phoff), Some(entsize), Some(num)) = (phoff, u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..usize::from(num)).all(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(entsize);
        match elf.get(at..at + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != PT_INTERP,
            None => false,
        }
    })
}

/// `sha256:<hex>` of `data`.
fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn tar_err(path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError {
    io("writing the tar", path)
}

/// The layer: a tar of busybox and the directories the images need.
fn layer(busybox: &[u8], path: &Path) -> Result<Vec<u8>, HarnessError> {
    let mut t = tar::Builder::new(Vec::new());
    for (dir, mode) in [("bin/", 0o755), ("etc/", 0o755), ("tmp/", 0o1777)] {
        let mut h = tar_header(tar::EntryType::Directory, mode, 0);
        t.append_data(&mut h, dir, std::io::empty())
            .map_err(tar_err(path))?;
    }
    let mut h = tar_header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    t.append_data(&mut h, "bin/busybox", busybox)
        .map_err(tar_err(path))?;
    let mut h = tar_header(tar::EntryType::Symlink, 0o777, 0);
    t.append_link(&mut h, "bin/sh", "busybox")
        .map_err(tar_err(path))?;
    t.into_inner().map_err(tar_err(path))
}

/// Builds the archive from the static busybox at `busybox` into `out`;
/// fails naming busybox-static when it is missing or not static.
pub fn build_archive(busybox: &Path, out: &Path) -> Result<PathBuf, HarnessError> {
    let missing = || HarnessError::MissingProgram {
        program: format!("{} (static)", busybox.display()),
        package: "busybox-static".into(),
    };
    let bin = std::fs::read(busybox).map_err(|_| missing())?;
    if !is_static_elf(&bin) {
        return Err(missing());
    }
    let layer = layer(&bin, out)?;
    let layer_digest = digest(&layer);
    let mut blobs: Vec<(String, Vec<u8>)> = vec![(layer_digest.clone(), layer.clone())];
    let mut manifests = Vec::new();
    for (name, cmd) in [
        (BUSYBOX_IMAGE, vec!["/bin/sh"]),
        (PAUSE_IMAGE, vec!["/bin/busybox", "sleep", "2147483647"]),
    ] {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))
        .map_err(|e| io("encoding the image config", out)(std::io::Error::other(e)))?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer.len(),
            }],
        }))
        .map_err(|e| io("encoding the manifest", out)(std::io::Error::other(e)))?;
        let tag = name.rsplit(':').next().unwrap_or("latest");
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }));
        blobs.push((digest(&config), config));
        blobs.push((digest(&manifest), manifest));
    }
    blobs.sort();
    blobs.dedup_by(|a, b| a.0 == b.0);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .map_err(|e| io("encoding the index", out)(std::io::Error::other(e)))?;

    let mut t = tar::Builder::new(Vec::new());
    let file = |t: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar_header(tar::EntryType::Regular, 0o644, data.len() as u64);
        t.append_data(&mut h, name, data).map_err(tar_err(out))
    };
    file(&mut t, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    file(&mut t, "index.json", &index)?;
    for (d, data) in &blobs {
        let hex = d.trim_start_matches("sha256:");
        file(&mut t, &format!("blobs/sha256/{hex}"), data)?;
    }
    let archive = t.into_inner().map_err(tar_err(out))?;
    let mut f = std::fs::File::create(out).map_err(io("creating", out))?;
    f.write_all(&archive).map_err(io("writing", out))?;
    // A raw disk is read in 512-byte sectors; a tar is already a multiple.
    Ok(out.to_owned())
}

/// QEMU arguments attaching `archive` read-only as a raw virtio disk with
/// serial [`CRI_DISK_SERIAL`] (read-only: kubeboot-data never considers
/// it), in a late PCI slot so that the data disks (`-drive if=virtio`,
/// the first free slots) keep their names (`/dev/vda`, ...).
pub fn cri_disk_args(archive: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!(
            "file={},if=none,id=kubeboot-cri,format=raw,readonly=on",
            crate::qemu_escape(&archive.display().to_string())
        ),
        "-device".into(),
        format!("virtio-blk-pci,drive=kubeboot-cri,serial={CRI_DISK_SERIAL},addr=0x18"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_elves_are_told_apart() {
        // A minimal ELF64 header with one program header of type `t`.
        let elf = |t: u32| {
            let mut e = vec![0u8; 64 + 56];
            e[..4].copy_from_slice(b"\x7fELF");
            e[4] = 2;
            e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
            e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
            e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
            e[64..68].copy_from_slice(&t.to_le_bytes());
            e
        };
        assert!(is_static_elf(&elf(1)));
        assert!(!is_static_elf(&elf(3)));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn archive_is_an_oci_layout_naming_both_images_and_is_deterministic() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Any static ELF will do for the layout; use a fake one.
        let mut fake = vec![0u8; 64 + 56];
        fake[..4].copy_from_slice(b"\x7fELF");
        fake[4] = 2;
        fake[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        fake[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        fake[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let bin = dir.path().join("busybox");
        std::fs::write(&bin, &fake).expect("write");
        let a = build_archive(&bin, &dir.path().join("a.tar")).expect("archive a");
        let b = build_archive(&bin, &dir.path().join("b.tar")).expect("archive b");
        let (a, b) = (std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
        assert_eq!(a, b);
        assert_eq!(a.len() % 512, 0);
        let mut names = Vec::new();
        let mut index = String::new();
        let mut ar = tar::Archive::new(&a[..]);
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").display().to_string();
            if name == "index.json" {
                std::io::Read::read_to_string(&mut e, &mut index).expect("index");
            }
            names.push(name);
        }
        assert_eq!(names[..2], ["oci-layout", "index.json"]);
        // One layer, two configs, two manifests.
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("blobs/sha256/"))
                .count(),
            5
        );
        assert!(
            index.contains(BUSYBOX_IMAGE) && index.contains(PAUSE_IMAGE),
            "{index}"
        );
    }

    #[test]
    fn a_dynamic_busybox_is_refused_naming_the_package() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("busybox");
        std::fs::write(&bin, b"#!/bin/sh\n").expect("write");
        let e = build_archive(&bin, &dir.path().join("x.tar")).expect_err("refused");
        assert!(e.to_string().contains("busybox-static"), "{e}");
    }
}
