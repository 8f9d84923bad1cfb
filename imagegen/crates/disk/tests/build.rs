//! End-to-end tests of the disk build on a synthetic image directory: the
//! GPT reads back (CRCs, backup header, entries), the ESP holds both boot
//! loaders and slot A, builds are bit-identical, sizes and bad input give
//! the documented errors, and `qemu-img info` accepts every format.
//!
//! Needs the boot loader packages (`systemd-boot-efi`, `syslinux`,
//! `syslinux-common`, `mtools`) and `qemu-utils`; a missing one fails the
//! test with the package name.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use disk::convert::{self, Format, ALL};
use disk::gpt;
use disk::layout::{self, MIB};

const CMDLINE: &str = "console=ttyS0 kubeboot.test=1";

/// Deterministic pseudo-random bytes (xorshift) so the FAT sees real data.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn image_dir(dir: &Path, modules: &[&str]) -> PathBuf {
    let d = dir.join("image");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("vmlinuz"), bytes(3 << 20, 1)).unwrap();
    std::fs::write(d.join("initramfs.img"), bytes(5 << 20, 2)).unwrap();
    let manifest = serde_json::json!({
        "profile": "master",
        "cmdline": CMDLINE,
        "source_date_epoch": 1_704_067_200u64,
        "kernel": { "modules_kept": modules },
    });
    std::fs::write(d.join("manifest.json"), manifest.to_string()).unwrap();
    d
}

fn build(image: &Path, out: &Path, formats: &[Format], size: Option<u64>) -> disk::Built {
    disk::build(&disk::Options {
        image_dir: image.to_owned(),
        out_dir: out.to_owned(),
        formats: formats.to_vec(),
        disk_size: size,
    })
    .unwrap_or_else(|e| panic!("disk build: {e}"))
}

#[test]
fn gpt_and_esp_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_dir(tmp.path(), &["nvme", "ena"]);
    let built = build(&image, &tmp.path().join("out"), &[Format::Raw], None);
    let raw = std::fs::read(tmp.path().join("out/disk.raw")).unwrap();
    assert_eq!(raw.len() as u64, built.layout.disk_size);

    let p = gpt::parse(&raw).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.partitions.len(), 2);
    let (esp, data) = (&p.partitions[0], &p.partitions[1]);
    assert_eq!(esp.type_guid, layout::ESP_TYPE);
    assert_eq!(esp.name, "kubeboot-esp");
    assert_eq!(esp.attributes, gpt::ATTR_LEGACY_BIOS_BOOTABLE);
    assert_eq!(esp.first_lba, 2048);
    assert_eq!(data.type_guid, layout::LINUX_DATA_TYPE);
    assert_eq!(data.name, "kubeboot-data");
    assert_eq!(data.first_lba, esp.last_lba + 1);
    assert_eq!(data.last_lba, p.primary.last_usable);
    assert!((data.last_lba + 1 - data.first_lba) * 512 >= layout::MIN_DATA - MIB);
    // gptmbr.bin is the legacy boot code.
    let gptmbr = std::fs::read(disk::boot::GPTMBR).unwrap();
    assert_eq!(p.boot_code, gptmbr[..440].to_vec());
    // The data partition is blank (the node formats it).
    let off = (data.first_lba * 512) as usize;
    assert!(raw[off..off + (1 << 20)].iter().all(|&b| b == 0));

    // The ESP: both loaders, their configuration, slot A, room for slot B.
    let esp_bytes =
        raw[(esp.first_lba * 512) as usize..((esp.last_lba + 1) * 512) as usize].to_vec();
    assert_eq!(
        &esp_bytes[3..11],
        b"SYSLINUX",
        "syslinux boot sector not installed"
    );
    let fs = fatfs::FileSystem::new(Cursor::new(esp_bytes), fatfs::FsOptions::new()).unwrap();
    let read = |path: &str| {
        let mut v = Vec::new();
        fs.root_dir()
            .open_file(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    assert_eq!(
        read("EFI/BOOT/BOOTX64.EFI"),
        std::fs::read(disk::boot::SYSTEMD_BOOT).unwrap()
    );
    assert_eq!(read("kubeboot/a/vmlinuz"), bytes(3 << 20, 1));
    assert_eq!(read("kubeboot/a/initramfs.img"), bytes(5 << 20, 2));
    let entry = String::from_utf8(read("loader/entries/kubeboot-a.conf")).unwrap();
    assert!(entry.contains(&format!("options {CMDLINE}\n")), "{entry}");
    let sys = String::from_utf8(read("syslinux/syslinux.cfg")).unwrap();
    assert!(sys.contains(&format!("APPEND {CMDLINE}\n")), "{sys}");
    assert!(!read("syslinux/ldlinux.sys").is_empty());
    assert!(!read("syslinux/ldlinux.c32").is_empty());
    let stats = fs.stats().unwrap();
    let free = stats.free_clusters() as u64 * stats.cluster_size() as u64;
    assert!(
        free >= 8 << 20,
        "slot B needs as much free space as slot A: {free} bytes free"
    );
    assert_eq!(fs.volume_label(), "KUBEBOOT");
}

#[test]
fn builds_are_bit_identical_and_every_format_passes_qemu_img_info() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_dir(tmp.path(), &["nvme", "ena"]);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    build(&image, &a, &ALL, None);
    // Another second, another directory: nothing may depend on either.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(&image, &b, &ALL, None);
    for name in [
        "disk.raw",
        "disk.qcow2",
        "disk.vmdk",
        "disk.vdi",
        "disk.vhd",
        "aws-import.json",
    ] {
        let x = std::fs::read(a.join(name)).unwrap();
        let y = std::fs::read(b.join(name)).unwrap();
        assert!(x == y, "{name} differs between two builds");
    }
    let qemu_img = convert::qemu_img().unwrap_or_else(|e| panic!("{e}"));
    let raw_size = std::fs::metadata(a.join("disk.raw")).unwrap().len();
    for (f, want) in [
        (Format::Raw, "raw"),
        (Format::Qcow2, "qcow2"),
        (Format::Vmdk, "vmdk"),
        (Format::Vdi, "vdi"),
        (Format::Vhd, "vpc"),
    ] {
        let info =
            convert::info(&qemu_img, &a.join(f.file_name()), f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info["format"], want, "{f}: {info}");
        assert_eq!(info["virtual-size"], raw_size, "{f}: {info}");
        // The stamped identity fields must not disturb the contents: the
        // image converts back to the very same raw disk.
        let back = tmp.path().join(format!("back-{want}.raw"));
        let st = std::process::Command::new(&qemu_img)
            .args(["convert", "-f", want, "-O", "raw"])
            .arg(a.join(f.file_name()))
            .arg(&back)
            .status()
            .unwrap();
        assert!(st.success(), "{f}: qemu-img convert back to raw failed");
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(a.join("disk.raw")).unwrap(),
            "{f}: does not convert back to disk.raw"
        );
        std::fs::remove_file(&back).unwrap();
    }
    let aws: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("aws-import.json")).unwrap()).unwrap();
    assert_eq!(aws["size_bytes"], raw_size);
    assert_eq!(aws["register_image"]["BootMode"], "uefi");
}

#[test]
fn disk_size_grows_data_and_too_small_says_how_much() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_dir(tmp.path(), &[]);
    let built = build(
        &image,
        &tmp.path().join("big"),
        &[Format::Raw],
        Some(1 << 30),
    );
    assert_eq!(built.layout.disk_size, 1 << 30);
    assert_eq!(
        std::fs::metadata(tmp.path().join("big/disk.raw"))
            .unwrap()
            .len(),
        1 << 30
    );
    assert_eq!(built.layout.data.last_lba, (1u64 << 30) / 512 - 34);

    let err = disk::build(&disk::Options {
        image_dir: image.clone(),
        out_dir: tmp.path().join("small"),
        formats: vec![Format::Raw],
        disk_size: Some(20 << 20),
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("too small") && msg.contains("at least"),
        "{msg}"
    );
    // Nothing that looks like an image is left behind.
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("small"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn aws_needs_nvme_and_ena() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_dir(tmp.path(), &["nvme", "virtio_blk"]);
    let err = disk::build(&disk::Options {
        image_dir: image,
        out_dir: tmp.path().join("out"),
        formats: vec![Format::Aws],
        disk_size: None,
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("ena") && !msg.contains("nvme,"), "{msg}");
}
