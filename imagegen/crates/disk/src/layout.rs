//! The partition layout (pure): sizes in, partitions and offsets out.
//!
//! ```text
//! LBA 0            protective MBR (+ syslinux gptmbr.bin boot code)
//! LBA 1..33        primary GPT header + 128 entries
//! 1 MiB            p1 kubeboot-esp   EFI system partition, FAT, legacy-BIOS-bootable
//!                     /EFI/BOOT/BOOTX64.EFI   systemd-boot (UEFI)
//!                     /syslinux/             syslinux (BIOS) + syslinux.cfg
//!                     /loader/                systemd-boot config + entry for slot A
//!                     /kubeboot/a/            slot A: vmlinuz + initramfs.img (the OS)
//!                     free space >= slot A    reserved for slot B (A/B updates)
//! ...              p2 kubeboot-data  Linux filesystem data, blank; formatted
//!                                    and grown to the end of the disk at first boot
//! last 33 LBAs     backup GPT entries + header
//! ```

use crate::gpt::{Partition, ATTR_LEGACY_BIOS_BOOTABLE, ENTRY_SECTORS, SECTOR};
use crate::guid::Seed;
use uuid::Uuid;

/// 1 MiB: partition alignment.
pub const MIB: u64 = 1 << 20;
/// EFI system partition type (UEFI 2.10 §5.3.3).
pub const ESP_TYPE: Uuid = Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// Linux filesystem data type (Discoverable Partitions Specification).
pub const LINUX_DATA_TYPE: Uuid = Uuid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);
/// Partition name (partlabel) of the ESP.
pub const ESP_LABEL: &str = "kubeboot-esp";
/// Partition name (partlabel) of the data partition; the node's
/// `kubeboot-data` service looks for it.
pub const DATA_LABEL: &str = "kubeboot-data";
/// Size of the data partition in the default (smallest) image.
pub const MIN_DATA: u64 = 64 * MIB;

/// Errors planning a layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// `--disk-size` is below what the content needs.
    #[error("disk size {requested} bytes ({} MiB) is too small: the OS slots and a minimal data partition need at least {needed} bytes ({} MiB)", requested / MIB, needed / MIB)]
    TooSmall {
        /// What was asked for.
        requested: u64,
        /// The minimum.
        needed: u64,
    },
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Disk size in bytes (a multiple of 1 MiB).
    pub disk_size: u64,
    /// Disk GUID.
    pub disk_guid: Uuid,
    /// p1: the ESP.
    pub esp: Partition,
    /// p2: the data partition.
    pub data: Partition,
}

impl Layout {
    /// Byte offset of the ESP.
    pub fn esp_offset(&self) -> u64 {
        self.esp.first_lba * SECTOR
    }
    /// Byte size of the ESP.
    pub fn esp_size(&self) -> u64 {
        (self.esp.last_lba + 1 - self.esp.first_lba) * SECTOR
    }
    /// Byte offset of the data partition.
    pub fn data_offset(&self) -> u64 {
        self.data.first_lba * SECTOR
    }
    /// The two partitions in table order.
    pub fn partitions(&self) -> Vec<Partition> {
        vec![self.esp.clone(), self.data.clone()]
    }
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// ESP size for an OS slot of `slot_bytes` plus `boot_bytes` of boot
/// loaders: two slots (A and the reserved B), FAT overhead and cluster
/// slack (4%), plus 4 MiB, rounded up to 1 MiB.
pub fn esp_size(slot_bytes: u64, boot_bytes: u64) -> u64 {
    let content = 2 * slot_bytes + boot_bytes;
    align_up(content + content / 25 + 4 * MIB, MIB)
}

/// The smallest disk for an ESP of `esp`: 1 MiB in front, the ESP, the
/// minimal data partition, 1 MiB at the end for the backup GPT.
pub fn min_disk_size(esp: u64) -> u64 {
    MIB + esp + MIN_DATA + MIB
}

/// Plans the layout. `disk_size` None means the smallest disk.
pub fn plan(esp: u64, disk_size: Option<u64>, seed: &Seed) -> Result<Layout, LayoutError> {
    let needed = min_disk_size(esp);
    let disk_size = match disk_size {
        None => needed,
        Some(s) if s < needed => {
            return Err(LayoutError::TooSmall {
                requested: s,
                needed,
            })
        }
        Some(s) => align_up(s, MIB),
    };
    let total = disk_size / SECTOR;
    let esp_first = MIB / SECTOR;
    let esp_last = esp_first + esp / SECTOR - 1;
    let data_first = esp_last + 1;
    let data_last = total - 2 - ENTRY_SECTORS;
    Ok(Layout {
        disk_size,
        disk_guid: seed.guid("disk"),
        esp: Partition {
            type_guid: ESP_TYPE,
            guid: seed.guid("esp"),
            first_lba: esp_first,
            last_lba: esp_last,
            attributes: ATTR_LEGACY_BIOS_BOOTABLE,
            name: ESP_LABEL.into(),
        },
        data: Partition {
            type_guid: LINUX_DATA_TYPE,
            guid: seed.guid("data"),
            first_lba: data_first,
            last_lba: data_last,
            attributes: 0,
            name: DATA_LABEL.into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Seed {
        Seed([1; 32])
    }

    #[test]
    fn default_is_smallest_and_aligned() {
        let esp = esp_size(110 * MIB, 2 * MIB);
        assert_eq!(esp % MIB, 0);
        assert!(esp >= 222 * MIB);
        let l = plan(esp, None, &seed()).unwrap();
        assert_eq!(l.disk_size, esp + MIN_DATA + 2 * MIB);
        assert_eq!(l.esp_offset(), MIB);
        assert_eq!(l.esp_size(), esp);
        assert_eq!(l.data_offset(), MIB + esp);
        assert_eq!(l.data_offset() % MIB, 0);
        // The data partition ends right before the backup entry array.
        assert_eq!(l.data.last_lba, l.disk_size / 512 - 34);
        assert!((l.data.last_lba + 1 - l.data.first_lba) * 512 >= MIN_DATA - MIB);
    }

    #[test]
    fn larger_disk_grows_data_only() {
        let esp = 100 * MIB;
        let l = plan(esp, Some(4 << 30), &seed()).unwrap();
        assert_eq!(l.disk_size, 4 << 30);
        assert_eq!(l.esp_size(), esp);
        assert_eq!(l.data.last_lba, (4u64 << 30) / 512 - 34);
    }

    #[test]
    fn too_small_says_how_much() {
        let err = plan(100 * MIB, Some(50 * MIB), &seed()).unwrap_err();
        assert_eq!(
            err,
            LayoutError::TooSmall {
                requested: 50 * MIB,
                needed: 166 * MIB
            }
        );
        assert!(err
            .to_string()
            .contains("at least 174063616 bytes (166 MiB)"));
    }

    #[test]
    fn odd_sizes_round_up_to_mib() {
        let l = plan(100 * MIB, Some(300 * MIB + 5), &seed()).unwrap();
        assert_eq!(l.disk_size, 301 * MIB);
    }
}
