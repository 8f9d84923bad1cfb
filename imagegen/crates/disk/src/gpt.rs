//! GUID Partition Table and protective MBR encoder/parser (UEFI 2.10 §5).
//!
//! Written by hand because the format is small and fixed, and the crates
//! that write GPTs (`gpt`, `gptman`) work on an open device, stamp random
//! GUIDs unless told otherwise and do not place legacy MBR boot code; here
//! the whole table is a pure function of the [`Layout`](crate::layout::Layout).
//! The parser exists to check what we wrote (CRCs, backup header, entries).

use uuid::Uuid;

/// Logical sector size of every image we write.
pub const SECTOR: u64 = 512;
/// Number of partition entries in the array (the minimum the spec allows).
pub const ENTRIES: u32 = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: u32 = 128;
/// Sectors taken by the entry array (128 * 128 / 512).
pub const ENTRY_SECTORS: u64 = (ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;
/// Attribute bit 2: legacy BIOS bootable (read by syslinux's `gptmbr.bin`).
pub const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// Errors parsing a GPT back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GptError {
    /// The image is smaller than a protective MBR plus two GPTs.
    #[error("image of {len} bytes is too small to hold a GPT")]
    TooSmall {
        /// Image length.
        len: usize,
    },
    /// No `55 AA` signature or no 0xEE protective partition in LBA 0.
    #[error("LBA 0 is not a protective MBR: {what}")]
    ProtectiveMbr {
        /// What is wrong.
        what: &'static str,
    },
    /// A header is malformed.
    #[error("{which} GPT header at LBA {lba}: {what}")]
    Header {
        /// "primary" or "backup".
        which: &'static str,
        /// Where it was read.
        lba: u64,
        /// What is wrong.
        what: String,
    },
}

/// One partition to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID.
    pub guid: Uuid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// Partition name (GPT partlabel), at most 36 UTF-16 units.
    pub name: String,
}

/// A parsed GPT header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other header.
    pub alternate_lba: u64,
    /// First usable LBA.
    pub first_usable: u64,
    /// Last usable LBA.
    pub last_usable: u64,
    /// Disk GUID.
    pub disk_guid: Uuid,
    /// LBA of the entry array.
    pub entries_lba: u64,
}

/// What [`parse`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The primary header.
    pub primary: Header,
    /// The backup header.
    pub backup: Header,
    /// Non-empty entries, in slot order.
    pub partitions: Vec<Partition>,
    /// The first 440 bytes of LBA 0 (legacy boot code).
    pub boot_code: Vec<u8>,
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}
fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}
fn get_guid(buf: &[u8], at: usize) -> Uuid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&buf[at..at + 16]);
    Uuid::from_bytes_le(b)
}

/// The protective MBR (LBA 0) with `boot_code` (at most 440 bytes) in front.
pub fn protective_mbr(total_sectors: u64, boot_code: &[u8]) -> [u8; 512] {
    let mut mbr = [0u8; 512];
    let n = boot_code.len().min(440);
    mbr[..n].copy_from_slice(&boot_code[..n]);
    let e = &mut mbr[446..462];
    // status 0 (UEFI requires it), CHS start 0/0/2, type 0xEE, CHS end max.
    e[0] = 0x00;
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = 0xEE;
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    put_u32(e, 8, 1);
    put_u32(e, 12, (total_sectors - 1).min(u32::MAX as u64) as u32);
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// The partition entry array (128 entries of 128 bytes).
pub fn entry_array(parts: &[Partition]) -> Vec<u8> {
    let mut buf = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate().take(ENTRIES as usize) {
        let e = &mut buf[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid.to_bytes_le());
        e[16..32].copy_from_slice(&p.guid.to_bytes_le());
        put_u64(e, 32, p.first_lba);
        put_u64(e, 40, p.last_lba);
        put_u64(e, 48, p.attributes);
        for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    buf
}

/// One GPT header sector; `entries_crc` is the CRC32 of the entry array.
pub fn header(h: &Header, entries_crc: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..8].copy_from_slice(b"EFI PART");
    put_u32(&mut s, 8, 0x0001_0000);
    put_u32(&mut s, 12, 92);
    put_u64(&mut s, 24, h.my_lba);
    put_u64(&mut s, 32, h.alternate_lba);
    put_u64(&mut s, 40, h.first_usable);
    put_u64(&mut s, 48, h.last_usable);
    s[56..72].copy_from_slice(&h.disk_guid.to_bytes_le());
    put_u64(&mut s, 72, h.entries_lba);
    put_u32(&mut s, 80, ENTRIES);
    put_u32(&mut s, 84, ENTRY_SIZE);
    put_u32(&mut s, 88, entries_crc);
    let crc = crc32fast::hash(&s[..92]);
    put_u32(&mut s, 16, crc);
    s
}

/// Everything the GPT puts on disk: (byte offset, bytes) pairs for LBA 0,
/// the primary header + entries, and the backup entries + header.
pub fn encode(
    total_sectors: u64,
    disk_guid: Uuid,
    parts: &[Partition],
    boot_code: &[u8],
) -> Vec<(u64, Vec<u8>)> {
    let last = total_sectors - 1;
    let entries = entry_array(parts);
    let crc = crc32fast::hash(&entries);
    let first_usable = 2 + ENTRY_SECTORS;
    let last_usable = last - 1 - ENTRY_SECTORS;
    let primary = Header {
        my_lba: 1,
        alternate_lba: last,
        first_usable,
        last_usable,
        disk_guid,
        entries_lba: 2,
    };
    let backup = Header {
        my_lba: last,
        alternate_lba: 1,
        entries_lba: last - ENTRY_SECTORS,
        ..primary.clone()
    };
    let mut front = Vec::with_capacity(((2 + ENTRY_SECTORS) * SECTOR) as usize);
    front.extend_from_slice(&protective_mbr(total_sectors, boot_code));
    front.extend_from_slice(&header(&primary, crc));
    front.extend_from_slice(&entries);
    let mut back = entries;
    back.extend_from_slice(&header(&backup, crc));
    vec![(0, front), (backup.entries_lba * SECTOR, back)]
}

fn parse_header(img: &[u8], lba: u64, which: &'static str) -> Result<Header, GptError> {
    let err = |what: String| GptError::Header { which, lba, what };
    let at = (lba * SECTOR) as usize;
    let s = &img[at..at + SECTOR as usize];
    if &s[0..8] != b"EFI PART" {
        return Err(err("no `EFI PART` signature".into()));
    }
    let size = get_u32(s, 12) as usize;
    if size != 92 {
        return Err(err(format!("header size {size}, want 92")));
    }
    let mut copy = s[..92].to_vec();
    put_u32(&mut copy, 16, 0);
    let want = get_u32(s, 16);
    let got = crc32fast::hash(&copy);
    if want != got {
        return Err(err(format!(
            "header CRC {want:#x} stored, {got:#x} computed"
        )));
    }
    let h = Header {
        my_lba: get_u64(s, 24),
        alternate_lba: get_u64(s, 32),
        first_usable: get_u64(s, 40),
        last_usable: get_u64(s, 48),
        disk_guid: get_guid(s, 56),
        entries_lba: get_u64(s, 72),
    };
    if h.my_lba != lba {
        return Err(err(format!("MyLBA says {}", h.my_lba)));
    }
    if get_u32(s, 80) != ENTRIES || get_u32(s, 84) != ENTRY_SIZE {
        return Err(err("unexpected entry count or size".into()));
    }
    let from = (h.entries_lba * SECTOR) as usize;
    let to = from + (ENTRIES * ENTRY_SIZE) as usize;
    if to > img.len() {
        return Err(err("entry array beyond the end of the image".into()));
    }
    let want = get_u32(s, 88);
    let got = crc32fast::hash(&img[from..to]);
    if want != got {
        return Err(err(format!(
            "entry array CRC {want:#x} stored, {got:#x} computed"
        )));
    }
    Ok(h)
}

/// Parses and checks a whole image: protective MBR, both headers (CRCs,
/// cross references), identical entry arrays.
pub fn parse(img: &[u8]) -> Result<Parsed, GptError> {
    let min = ((2 * (1 + ENTRY_SECTORS) + 1) * SECTOR) as usize;
    if img.len() < min || !img.len().is_multiple_of(SECTOR as usize) {
        return Err(GptError::TooSmall { len: img.len() });
    }
    if img[510] != 0x55 || img[511] != 0xAA {
        return Err(GptError::ProtectiveMbr {
            what: "no 55 AA signature",
        });
    }
    if img[446 + 4] != 0xEE {
        return Err(GptError::ProtectiveMbr {
            what: "first partition is not type 0xEE",
        });
    }
    let last = img.len() as u64 / SECTOR - 1;
    let primary = parse_header(img, 1, "primary")?;
    let backup = parse_header(img, primary.alternate_lba.min(last), "backup")?;
    if primary.alternate_lba != last || backup.alternate_lba != 1 {
        return Err(GptError::Header {
            which: "backup",
            lba: backup.my_lba,
            what: "not at the last sector or not pointing at the primary".into(),
        });
    }
    let pa = (primary.entries_lba * SECTOR) as usize;
    let ba = (backup.entries_lba * SECTOR) as usize;
    let len = (ENTRIES * ENTRY_SIZE) as usize;
    if img[pa..pa + len] != img[ba..ba + len] {
        return Err(GptError::Header {
            which: "backup",
            lba: backup.my_lba,
            what: "entry array differs from the primary one".into(),
        });
    }
    let mut partitions = Vec::new();
    for i in 0..ENTRIES as usize {
        let e = &img[pa + i * ENTRY_SIZE as usize..pa + (i + 1) * ENTRY_SIZE as usize];
        let type_guid = get_guid(e, 0);
        if type_guid.is_nil() {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Partition {
            type_guid,
            guid: get_guid(e, 16),
            first_lba: get_u64(e, 32),
            last_lba: get_u64(e, 40),
            attributes: get_u64(e, 48),
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(Parsed {
        primary,
        backup,
        partitions,
        boot_code: img[..440].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(total: u64, parts: &[Partition]) -> Vec<u8> {
        let mut img = vec![0u8; (total * SECTOR) as usize];
        for (off, bytes) in encode(total, Uuid::from_u128(7), parts, &[0x90; 440]) {
            img[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
        }
        img
    }

    fn part() -> Partition {
        Partition {
            type_guid: Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B),
            guid: Uuid::from_u128(42),
            first_lba: 2048,
            last_lba: 4095,
            attributes: ATTR_LEGACY_BIOS_BOOTABLE,
            name: "kubeboot-esp".into(),
        }
    }

    #[test]
    fn round_trip() {
        let img = image(8192, &[part()]);
        let p = parse(&img).unwrap();
        assert_eq!(p.partitions, vec![part()]);
        assert_eq!(p.primary.last_usable, 8192 - 34);
        assert_eq!(p.primary.first_usable, 34);
        assert_eq!(p.backup.my_lba, 8191);
        assert_eq!(p.backup.entries_lba, 8191 - 32);
        assert_eq!(p.primary.disk_guid, Uuid::from_u128(7));
        assert_eq!(p.boot_code, vec![0x90; 440]);
    }

    #[test]
    fn guid_mixed_endian_on_disk() {
        // UEFI stores the first three fields little-endian: the ESP type
        // C12A7328-F81F-11D2-... starts with 28 73 2A C1 1F F8 D2 11.
        let img = image(8192, &[part()]);
        assert_eq!(
            &img[1024..1032],
            &[0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11]
        );
    }

    #[test]
    fn corruption_is_detected() {
        let good = image(8192, &[part()]);
        let mut bad = good.clone();
        bad[1024 + 40] ^= 1; // entry array byte
        assert!(matches!(
            parse(&bad),
            Err(GptError::Header {
                which: "primary",
                ..
            })
        ));
        let mut bad = good.clone();
        bad[8191 * 512 + 30] ^= 1; // backup header byte
        assert!(matches!(
            parse(&bad),
            Err(GptError::Header {
                which: "backup",
                ..
            })
        ));
        let mut bad = good;
        bad[510] = 0;
        assert!(matches!(parse(&bad), Err(GptError::ProtectiveMbr { .. })));
    }

    #[test]
    fn protective_mbr_caps_size() {
        let m = protective_mbr(1 << 40, &[]);
        assert_eq!(&m[458..462], &u32::MAX.to_le_bytes());
        let m = protective_mbr(100, &[]);
        assert_eq!(&m[458..462], &99u32.to_le_bytes());
    }
}
