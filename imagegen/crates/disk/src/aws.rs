//! The AWS import manifest (pure): what `aws ec2 import-snapshot` and
//! `aws ec2 register-image` need for the raw image. Nothing is uploaded.

use serde_json::{json, Value};

/// Kernel modules an EC2 Nitro instance needs in the image.
pub const REQUIRED_MODULES: [&str; 2] = ["nvme", "ena"];

/// Modules from `required` missing in `kept` (names or paths like
/// `kernel/drivers/nvme/host/nvme.ko.xz` both count).
pub fn missing_modules<'a>(kept: &[String], required: &[&'a str]) -> Vec<&'a str> {
    let names: Vec<String> = kept
        .iter()
        .map(|m| {
            let base = m.rsplit('/').next().unwrap_or(m);
            let base = base.split(".ko").next().unwrap_or(base);
            base.replace('-', "_")
        })
        .collect();
    required
        .iter()
        .copied()
        .filter(|r| !names.iter().any(|n| n == r))
        .collect()
}

/// The manifest for image `name` (profile), `file` of `size` bytes with
/// `sha256`.
pub fn manifest(name: &str, file: &str, size: u64, sha256: &str) -> Value {
    let short = &sha256[..sha256.len().min(12)];
    json!({
        "image": file,
        "size_bytes": size,
        "sha256": sha256,
        "architecture": "x86_64",
        "boot_mode": "uefi",
        "ena_support": true,
        "root_device_name": "/dev/xvda",
        "import_snapshot": {
            "Description": format!("kubeboot {name} {short}"),
            "DiskContainer": {
                "Description": format!("kubeboot {name} {short}"),
                "Format": "RAW",
                "UserBucket": { "S3Bucket": "<your-bucket>", "S3Key": format!("kubeboot/{name}/{short}/{file}") }
            }
        },
        "register_image": {
            "Name": format!("kubeboot-{name}-{short}"),
            "Architecture": "x86_64",
            "BootMode": "uefi",
            "EnaSupport": true,
            "VirtualizationType": "hvm",
            "RootDeviceName": "/dev/xvda",
            "ImdsSupport": "v2.0",
            "BlockDeviceMappings": [{
                "DeviceName": "/dev/xvda",
                "Ebs": { "SnapshotId": "<snapshot id from import-snapshot>", "VolumeType": "gp3", "DeleteOnTermination": true }
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_what_register_image_needs() {
        let m = manifest("master", "disk.raw", 1 << 30, &"ab".repeat(32));
        assert_eq!(m["register_image"]["Architecture"], "x86_64");
        assert_eq!(m["register_image"]["BootMode"], "uefi");
        assert_eq!(m["register_image"]["EnaSupport"], true);
        assert_eq!(m["register_image"]["RootDeviceName"], "/dev/xvda");
        assert_eq!(
            m["register_image"]["BlockDeviceMappings"][0]["DeviceName"],
            "/dev/xvda"
        );
        assert_eq!(m["import_snapshot"]["DiskContainer"]["Format"], "RAW");
    }

    #[test]
    fn module_check_accepts_names_and_paths() {
        let kept = vec![
            "kernel/drivers/nvme/host/nvme.ko.xz".to_owned(),
            "virtio_blk".to_owned(),
        ];
        assert_eq!(missing_modules(&kept, &REQUIRED_MODULES), vec!["ena"]);
        let kept = vec!["nvme".to_owned(), "ena".to_owned()];
        assert!(missing_modules(&kept, &REQUIRED_MODULES).is_empty());
    }
}
