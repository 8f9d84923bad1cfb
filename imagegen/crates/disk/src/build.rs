//! Orchestration (I/O): read an imagegen output directory, write the raw
//! master image, convert it, write the AWS manifest. Every output is
//! written to a temporary file in the output directory and renamed into
//! place, so an interrupted build never leaves a file that looks complete.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::info;

use crate::boot::{self, Loaders};
use crate::convert::{self, Format};
use crate::esp::{self, EspFile};
use crate::gpt::{self, SECTOR};
use crate::guid::Seed;
use crate::layout::{self, Layout};
use crate::{aws, stamp, Error};

/// File name of the AWS import manifest.
pub const AWS_MANIFEST: &str = "aws-import.json";
/// Used when the manifest has no `source_date_epoch` (2024-01-01).
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// An imagegen output directory (`vmlinuz`, `initramfs.img`, `manifest.json`).
    pub image_dir: PathBuf,
    /// Where the disk images go (usually the same directory).
    pub out_dir: PathBuf,
    /// Formats; `disk.raw` is always written (it is the master).
    pub formats: Vec<Format>,
    /// `--disk-size`; None is the smallest disk.
    pub disk_size: Option<u64>,
}

/// The image facts the disk needs, read from `manifest.json`.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Profile name.
    pub name: String,
    /// Kernel command line.
    pub cmdline: String,
    /// SOURCE_DATE_EPOCH of the image.
    pub epoch: u64,
    /// Kernel modules kept in the image (None when the manifest has none).
    pub modules: Option<Vec<String>>,
    /// Seed of every identifier (SHA-256 of the manifest bytes).
    pub seed: Seed,
}

impl ImageInfo {
    /// Reads the facts from manifest bytes (pure).
    pub fn from_manifest(bytes: &[u8], path: &Path) -> Result<ImageInfo, Error> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let modules = v
            .pointer("/kernel/modules_kept")
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            });
        Ok(ImageInfo {
            name: v
                .get("profile")
                .and_then(|s| s.as_str())
                .unwrap_or("kubeboot")
                .to_owned(),
            cmdline: v
                .get("cmdline")
                .and_then(|s| s.as_str())
                .unwrap_or("console=ttyS0")
                .to_owned(),
            epoch: v
                .get("source_date_epoch")
                .and_then(|s| s.as_u64())
                .unwrap_or(DEFAULT_EPOCH),
            modules,
            seed: Seed::from_manifest(bytes),
        })
    }
}

/// What a build wrote.
#[derive(Debug, Clone)]
pub struct Built {
    /// The layout of `disk.raw`.
    pub layout: Layout,
    /// Files written, with their sizes, in build order.
    pub files: Vec<(PathBuf, u64)>,
    /// Seconds spent on the raw image and on each conversion.
    pub timings: Vec<(String, f64)>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// The ESP files for slot A plus both loaders' files and configurations.
pub fn esp_files(
    loaders: &Loaders,
    info: &ImageInfo,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
) -> Vec<EspFile> {
    let f = |path: &str, data: Vec<u8>| EspFile {
        path: path.to_owned(),
        data,
    };
    vec![
        f("EFI/BOOT/BOOTX64.EFI", loaders.systemd_boot.clone()),
        f("loader/loader.conf", boot::loader_conf().into_bytes()),
        f(
            "loader/entries/kubeboot-a.conf",
            boot::entry_conf(&info.cmdline).into_bytes(),
        ),
        f(
            &format!("{}/syslinux.cfg", boot::SYSLINUX_DIR),
            boot::syslinux_cfg(&info.cmdline).into_bytes(),
        ),
        f(&format!("{}/vmlinuz", boot::SLOT_A), kernel),
        f(&format!("{}/initramfs.img", boot::SLOT_A), initrd),
    ]
}

/// Room syslinux's installer needs on the ESP (ldlinux.sys + ldlinux.c32).
const SYSLINUX_ROOM: u64 = 512 << 10;

/// Writes the raw image to `path` (a new file): GPT, ESP, syslinux.
pub fn write_raw(
    path: &Path,
    loaders: &Loaders,
    info: &ImageInfo,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    disk_size: Option<u64>,
) -> Result<Layout, Error> {
    let slot = (kernel.len() + initrd.len()) as u64;
    let files = esp_files(loaders, info, kernel, initrd);
    let boot_bytes: u64 = files
        .iter()
        .filter(|f| !f.path.starts_with(boot::SLOT_A))
        .map(|f| f.data.len() as u64)
        .sum::<u64>()
        + SYSLINUX_ROOM;
    let esp_size = layout::esp_size(slot, boot_bytes);
    let layout = layout::plan(esp_size, disk_size, &info.seed)?;
    let fat = esp::build(
        layout.esp_size(),
        &files,
        info.seed.serial("esp-fat"),
        info.epoch,
        layout.esp.first_lba as u32,
    )?;
    drop(files);
    let mut file = File::create(path).map_err(io("creating", path))?;
    file.set_len(layout.disk_size).map_err(io("sizing", path))?;
    let total = layout.disk_size / SECTOR;
    for (off, bytes) in gpt::encode(
        total,
        layout.disk_guid,
        &layout.partitions(),
        &loaders.gptmbr,
    ) {
        file.seek(SeekFrom::Start(off))
            .map_err(io("seeking", path))?;
        file.write_all(&bytes).map_err(io("writing", path))?;
    }
    file.seek(SeekFrom::Start(layout.esp_offset()))
        .map_err(io("seeking", path))?;
    file.write_all(&fat).map_err(io("writing", path))?;
    file.sync_all().map_err(io("syncing", path))?;
    drop(file);
    boot::install_syslinux(&loaders.syslinux, path, layout.esp_offset(), info.epoch)?;
    Ok(layout)
}

/// Replaces the random/time identity fields qemu-img wrote (see [`stamp`]).
fn stamp_file(path: &Path, format: Format, info: &ImageInfo) -> Result<(), Error> {
    let (at, len): (SeekFrom, usize) = match format {
        Format::Vmdk => (SeekFrom::Start(0), 64 << 10),
        Format::Vdi => (SeekFrom::Start(0), 512),
        Format::Vhd => (SeekFrom::End(-512), 512),
        _ => return Ok(()),
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("opening", path))?;
    let start = f.seek(at).map_err(io("seeking", path))?;
    let mut buf = Vec::with_capacity(len);
    (&mut f)
        .take(len as u64)
        .read_to_end(&mut buf)
        .map_err(io("reading", path))?;
    let stamped = match format {
        Format::Vmdk => stamp::vmdk(&mut buf, &info.seed),
        Format::Vdi => stamp::vdi(&mut buf, &info.seed),
        _ => stamp::vhd(&mut buf, &info.seed, info.epoch),
    };
    stamped.map_err(|e| Error::Stamp {
        path: path.to_owned(),
        source: e,
    })?;
    f.seek(SeekFrom::Start(start))
        .map_err(io("seeking", path))?;
    f.write_all(&buf).map_err(io("writing", path))?;
    f.sync_all().map_err(io("syncing", path))
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = File::open(path).map_err(io("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// A temporary file beside the final one, mode 0644 like the other
/// outputs (tempfile creates 0600), removed unless persisted.
fn temp_in(dir: &Path, name: &str) -> Result<tempfile::TempPath, Error> {
    use std::os::unix::fs::PermissionsExt;
    let f = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(io("creating a temporary file in", dir))?;
    Ok(f.into_temp_path())
}

/// Builds the requested formats from an imagegen output directory.
pub fn build(opts: &Options) -> Result<Built, Error> {
    let manifest_path = opts.image_dir.join("manifest.json");
    let kernel_path = opts.image_dir.join("vmlinuz");
    let initrd_path = opts.image_dir.join("initramfs.img");
    let manifest = std::fs::read(&manifest_path).map_err(io("reading", &manifest_path))?;
    let info = ImageInfo::from_manifest(&manifest, &manifest_path)?;
    if opts.formats.contains(&Format::Aws) {
        let missing = match &info.modules {
            Some(kept) => aws::missing_modules(kept, &aws::REQUIRED_MODULES),
            None => aws::REQUIRED_MODULES.to_vec(),
        };
        if !missing.is_empty() {
            return Err(Error::AwsModules {
                missing: missing.join(", "),
                manifest: manifest_path,
            });
        }
    }
    // Check every tool before spending time on the image.
    let loaders = Loaders::from_host()?;
    let needs_qemu_img = opts.formats.iter().any(|f| f.qemu_img_args().is_some());
    let qemu_img = if needs_qemu_img {
        Some(convert::qemu_img()?)
    } else {
        None
    };
    let kernel = std::fs::read(&kernel_path).map_err(io("reading", &kernel_path))?;
    let initrd = std::fs::read(&initrd_path).map_err(io("reading", &initrd_path))?;
    std::fs::create_dir_all(&opts.out_dir).map_err(io("creating", &opts.out_dir))?;

    let mut files = Vec::new();
    let mut timings = Vec::new();
    let t = Instant::now();
    let raw_final = opts.out_dir.join(Format::Raw.file_name());
    let raw_tmp = temp_in(&opts.out_dir, "disk.raw")?;
    let layout = write_raw(&raw_tmp, &loaders, &info, kernel, initrd, opts.disk_size)?;
    timings.push(("raw".to_owned(), t.elapsed().as_secs_f64()));
    info!(
        size = layout.disk_size,
        esp = layout.esp_size(),
        "raw image built in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    for &format in &opts.formats {
        let (Some(qemu_img), Some(_)) = (&qemu_img, format.qemu_img_args()) else {
            continue;
        };
        let t = Instant::now();
        let out = opts.out_dir.join(format.file_name());
        // Converted under its final name inside a temporary directory:
        // a VMDK descriptor records its own file name.
        let dir = tempfile::Builder::new()
            .prefix(".disk.partial-")
            .tempdir_in(&opts.out_dir)
            .map_err(io("creating a temporary directory in", &opts.out_dir))?;
        let tmp = dir.path().join(format.file_name());
        convert::convert(qemu_img, &raw_tmp, format, &tmp)?;
        stamp_file(&tmp, format, &info)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
                .map_err(io("setting the mode of", &tmp))?;
        }
        std::fs::rename(&tmp, &out).map_err(io("renaming into place", &out))?;
        timings.push((format.to_string(), t.elapsed().as_secs_f64()));
        info!(format = %format, "converted in {:.1}s", t.elapsed().as_secs_f64());
        let size = std::fs::metadata(&out).map_err(io("reading", &out))?.len();
        files.push((out, size));
    }
    raw_tmp.persist(&raw_final).map_err(|e| Error::Io {
        what: "renaming into place",
        path: raw_final.clone(),
        source: e.error,
    })?;
    files.insert(0, (raw_final.clone(), layout.disk_size));
    if opts.formats.contains(&Format::Aws) {
        let sha = sha256_file(&raw_final)?;
        let m = aws::manifest(&info.name, Format::Aws.file_name(), layout.disk_size, &sha);
        let out = opts.out_dir.join(AWS_MANIFEST);
        let tmp = temp_in(&opts.out_dir, AWS_MANIFEST)?;
        let mut text = serde_json::to_string_pretty(&m).map_err(|e| Error::Manifest {
            path: out.clone(),
            detail: e.to_string(),
        })?;
        text.push('\n');
        std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
        tmp.persist(&out).map_err(|e| Error::Io {
            what: "renaming into place",
            path: out.clone(),
            source: e.error,
        })?;
        let size = std::fs::metadata(&out).map_err(io("reading", &out))?.len();
        files.push((out, size));
    }
    Ok(Built {
        layout,
        files,
        timings,
    })
}
