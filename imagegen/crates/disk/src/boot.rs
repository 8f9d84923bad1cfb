//! Boot loaders: systemd-boot for UEFI, syslinux for legacy BIOS, both on
//! the ESP and both booting slot A's kernel + initramfs.
//!
//! The loader binaries come from the build host's Debian packages
//! (`systemd-boot-efi`, `syslinux`, `syslinux-common`, `mtools`; `make deps`
//! installs them). The configuration files are rendered here (pure).
//! syslinux's installer is run on the image file (`syslinux --offset`,
//! through mtools, no mount): it writes the FAT boot sector and
//! `ldlinux.sys`/`ldlinux.c32` with the sector map the boot sector needs,
//! which is exactly the part not worth reimplementing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// systemd-boot's UEFI binary.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// syslinux's GPT-aware MBR code (boots the legacy-BIOS-bootable partition).
pub const GPTMBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";
/// Directory of the ESP holding syslinux and its configuration.
pub const SYSLINUX_DIR: &str = "syslinux";
/// The OS slot that is booted (see the crate docs for slot B).
pub const SLOT_A: &str = "kubeboot/a";

/// Errors locating or installing the boot loaders.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A loader file is not on the host.
    #[error("boot loader file {path} is missing: apt-get install {package}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// Reading a loader file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The syslinux installer failed.
    #[error("`syslinux --install --offset {offset}` on {image} failed: {detail}")]
    Syslinux {
        /// The image file.
        image: PathBuf,
        /// The ESP offset.
        offset: u64,
        /// stderr or the spawn error.
        detail: String,
    },
}

/// The loader files read from the host.
#[derive(Debug, Clone)]
pub struct Loaders {
    /// `systemd-bootx64.efi`, installed as `\EFI\BOOT\BOOTX64.EFI`.
    pub systemd_boot: Vec<u8>,
    /// `gptmbr.bin` (440 bytes used).
    pub gptmbr: Vec<u8>,
    /// The `syslinux` installer program.
    pub syslinux: PathBuf,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn read(path: &str, package: &'static str) -> Result<Vec<u8>, BootError> {
    let p = PathBuf::from(path);
    if !p.is_file() {
        return Err(BootError::Missing { path: p, package });
    }
    std::fs::read(&p).map_err(|source| BootError::Read { path: p, source })
}

impl Loaders {
    /// Reads the loaders from the host, naming the package of a missing one.
    pub fn from_host() -> Result<Loaders, BootError> {
        let systemd_boot = read(SYSTEMD_BOOT, "systemd-boot-efi")?;
        let gptmbr = read(GPTMBR, "syslinux-common")?;
        let syslinux = find_program("syslinux").ok_or(BootError::Missing {
            path: "syslinux".into(),
            package: "syslinux",
        })?;
        if find_program("mcopy").is_none() {
            return Err(BootError::Missing {
                path: "mcopy".into(),
                package: "mtools",
            });
        }
        Ok(Loaders {
            systemd_boot,
            gptmbr,
            syslinux,
        })
    }
}

/// `loader/loader.conf`: boot slot A at once (a key press still shows the menu).
pub fn loader_conf() -> String {
    "default kubeboot-a.conf\ntimeout 0\neditor no\nconsole-mode keep\n".to_owned()
}

/// `loader/entries/kubeboot-a.conf`: slot A with the profile's command line.
pub fn entry_conf(cmdline: &str) -> String {
    format!(
        "title kubeboot (slot A)\nlinux /{SLOT_A}/vmlinuz\ninitrd /{SLOT_A}/initramfs.img\noptions {cmdline}\n"
    )
}

/// `syslinux/syslinux.cfg`: serial console, boot slot A without a prompt.
pub fn syslinux_cfg(cmdline: &str) -> String {
    format!(
        "SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT kubeboot-a\n\nLABEL kubeboot-a\n  MENU LABEL kubeboot (slot A)\n  LINUX /{SLOT_A}/vmlinuz\n  INITRD /{SLOT_A}/initramfs.img\n  APPEND {cmdline}\n"
    )
}

/// Runs syslinux's installer on the FAT at byte `offset` of `image`.
/// mtools stamps the files it writes with SOURCE_DATE_EPOCH.
pub fn install_syslinux(
    syslinux: &Path,
    image: &Path,
    offset: u64,
    epoch: u64,
) -> Result<(), BootError> {
    let err = |detail: String| BootError::Syslinux {
        image: image.to_owned(),
        offset,
        detail,
    };
    let out = Command::new(syslinux)
        .arg("--install")
        .arg("--directory")
        .arg(format!("/{SYSLINUX_DIR}"))
        .arg("--offset")
        .arg(offset.to_string())
        .arg(image)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("TZ", "UTC")
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_carry_the_command_line_and_slot_a() {
        let c = "console=ttyS0 quiet";
        assert!(entry_conf(c).contains("options console=ttyS0 quiet\n"));
        assert!(entry_conf(c).contains("linux /kubeboot/a/vmlinuz\n"));
        assert!(syslinux_cfg(c).contains("APPEND console=ttyS0 quiet\n"));
        assert!(syslinux_cfg(c).contains("INITRD /kubeboot/a/initramfs.img\n"));
        assert!(syslinux_cfg(c).starts_with("SERIAL 0 115200\n"));
        assert!(loader_conf().contains("default kubeboot-a.conf\n"));
    }
}
