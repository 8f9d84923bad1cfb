//! Output formats and the conversions from the raw master image, done by
//! `qemu-img convert` (the standard tool; not reimplemented).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

/// An output format of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// The GPT master image (`disk.raw`), for `dd` and QEMU.
    Raw,
    /// QEMU copy-on-write v3 (`disk.qcow2`).
    Qcow2,
    /// VMware/VirtualBox, monolithicSparse (`disk.vmdk`).
    Vmdk,
    /// VirtualBox (`disk.vdi`).
    Vdi,
    /// Fixed VHD (`disk.vhd`), for clouds that want one (Azure).
    Vhd,
    /// AMI-ready raw image plus `aws-import.json`.
    Aws,
}

/// Every format, in the order they are listed and built.
pub const ALL: [Format; 6] = [
    Format::Raw,
    Format::Qcow2,
    Format::Vmdk,
    Format::Vdi,
    Format::Vhd,
    Format::Aws,
];

/// An unknown `--format` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown disk format `{given}`; valid formats: raw, qcow2, vmdk, vdi, vhd, aws")]
pub struct UnknownFormat {
    /// What was given.
    pub given: String,
}

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        Ok(match s {
            "raw" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vdi" => Format::Vdi,
            "vhd" => Format::Vhd,
            "aws" => Format::Aws,
            _ => {
                return Err(UnknownFormat {
                    given: s.to_owned(),
                })
            }
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Format {
    /// The name `--format` takes (and [`FromStr`] parses).
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhd => "vhd",
            Format::Aws => "aws",
        }
    }

    /// One line for a command line's help: what the format is for.
    pub fn description(self) -> &'static str {
        match self {
            Format::Raw => "GPT disk image booting under UEFI and legacy BIOS (disk.raw)",
            Format::Qcow2 => "disk.qcow2 (QEMU)",
            Format::Vmdk => "disk.vmdk, monolithicSparse (VirtualBox, VMware)",
            Format::Vdi => "disk.vdi (VirtualBox)",
            Format::Vhd => "disk.vhd, fixed (clouds that need VHD)",
            Format::Aws => "AMI-ready disk.raw plus aws-import.json",
        }
    }

    /// The image file this format produces (aws shares `disk.raw`).
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Raw | Format::Aws => "disk.raw",
            Format::Qcow2 => "disk.qcow2",
            Format::Vmdk => "disk.vmdk",
            Format::Vdi => "disk.vdi",
            Format::Vhd => "disk.vhd",
        }
    }

    /// qemu-img's name of the format of [`Format::file_name`].
    pub fn qemu_format(self) -> &'static str {
        match self {
            Format::Raw | Format::Aws => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhd => "vpc",
        }
    }

    /// `qemu-img convert` arguments after `-f raw` (None for raw/aws).
    pub fn qemu_img_args(self) -> Option<Vec<&'static str>> {
        Some(match self {
            Format::Raw | Format::Aws => return None,
            Format::Qcow2 => vec!["-O", "qcow2", "-o", "compat=1.1"],
            // monolithicSparse: one growable file that VirtualBox and VMware
            // Workstation attach directly (streamOptimized is for OVA/ESXi
            // import and cannot be attached writable).
            Format::Vmdk => vec!["-O", "vmdk", "-o", "subformat=monolithicSparse"],
            Format::Vdi => vec!["-O", "vdi"],
            // force_size keeps the exact raw size (Azure wants whole MiB).
            Format::Vhd => vec!["-O", "vpc", "-o", "subformat=fixed,force_size"],
        })
    }
}

/// Parses a comma-separated `--format` list (duplicates collapse).
pub fn parse_list(list: &str) -> Result<Vec<Format>, UnknownFormat> {
    let mut out = Vec::new();
    for f in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let f: Format = f.parse()?;
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out.sort();
    Ok(out)
}

/// Errors converting.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// qemu-img is not installed.
    #[error("qemu-img not found in PATH: apt-get install qemu-utils")]
    MissingQemuImg,
    /// qemu-img failed.
    #[error("`qemu-img {args}` failed: {detail}")]
    Failed {
        /// The arguments.
        args: String,
        /// stderr or the spawn error.
        detail: String,
    },
}

/// Finds `qemu-img` in `PATH`.
pub fn qemu_img() -> Result<PathBuf, ConvertError> {
    let path = std::env::var_os("PATH").ok_or(ConvertError::MissingQemuImg)?;
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-img"))
        .find(|p| p.is_file())
        .ok_or(ConvertError::MissingQemuImg)
}

fn run(qemu_img: &Path, args: &[String]) -> Result<String, ConvertError> {
    let out = Command::new(qemu_img)
        .args(args)
        .output()
        .map_err(|e| ConvertError::Failed {
            args: args.join(" "),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ConvertError::Failed {
            args: args.join(" "),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Converts `raw` to `format` at `out`.
pub fn convert(
    qemu_img: &Path,
    raw: &Path,
    format: Format,
    out: &Path,
) -> Result<(), ConvertError> {
    let Some(fmt_args) = format.qemu_img_args() else {
        return Ok(());
    };
    let mut args: Vec<String> = vec!["convert".into(), "-q".into(), "-f".into(), "raw".into()];
    args.extend(fmt_args.iter().map(|s| s.to_string()));
    args.push(raw.display().to_string());
    args.push(out.display().to_string());
    run(qemu_img, &args).map(|_| ())
}

/// `qemu-img info --output=json` of `path` read as `format` (checks the
/// file is well formed). The format is explicit because a fixed VHD is raw
/// data with a footer, which qemu-img's probing reports as raw.
pub fn info(
    qemu_img: &Path,
    path: &Path,
    format: Format,
) -> Result<serde_json::Value, ConvertError> {
    let args = vec![
        "info".to_owned(),
        "--output=json".to_owned(),
        "-f".to_owned(),
        format.qemu_format().to_owned(),
        path.display().to_string(),
    ];
    let text = run(qemu_img, &args)?;
    serde_json::from_str(&text).map_err(|e| ConvertError::Failed {
        args: args.join(" "),
        detail: format!("unparsable JSON: {e}"),
    })
}

/// Parses a size such as `4G`, `512M`, `300MiB` or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = t[digits.len()..].trim().to_ascii_uppercase();
    let n: u64 = digits.parse().map_err(|_| {
        format!("size `{s}`: expected a number with an optional K, M, G or T suffix")
    })?;
    let mult: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("size `{s}`: unknown unit; use K, M, G or T")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_list() {
        assert_eq!(
            parse_list("qcow2,raw,qcow2").unwrap(),
            vec![Format::Raw, Format::Qcow2]
        );
        let e = parse_list("raw,iso").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown disk format `iso`; valid formats: raw, qcow2, vmdk, vdi, vhd, aws"
        );
        for f in ALL {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        }
    }

    #[test]
    fn vhd_is_fixed_and_vmdk_sparse() {
        let vhd = Format::Vhd.qemu_img_args().unwrap().join(" ");
        assert_eq!(vhd, "-O vpc -o subformat=fixed,force_size");
        let vmdk = Format::Vmdk.qemu_img_args().unwrap().join(" ");
        assert!(vmdk.contains("subformat=monolithicSparse"));
        assert!(Format::Aws.qemu_img_args().is_none());
        assert_eq!(Format::Aws.file_name(), "disk.raw");
    }

    #[test]
    fn missing_qemu_img_names_the_package() {
        assert_eq!(
            ConvertError::MissingQemuImg.to_string(),
            "qemu-img not found in PATH: apt-get install qemu-utils"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("4X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("G").unwrap_err().contains("expected a number"));
    }
}
