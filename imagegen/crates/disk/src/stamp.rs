//! Deterministic identity fields for the formats whose qemu-img writer
//! stamps random or time-based values (pure, on header bytes).
//!
//! qemu-img writes, per conversion: a random content id `CID=` in the VMDK
//! descriptor; random image and last-snapshot UUIDs in the VDI header
//! (offsets 0x188 and 0x198); the creation time and a random UUID in the
//! VHD footer. These identify an image, they do not describe its contents,
//! so they are replaced with values derived from the image seed (and the
//! VHD time with SOURCE_DATE_EPOCH), which makes those outputs bit-identical
//! across builds too.

use crate::guid::Seed;

/// Errors: the header is not what qemu-img writes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StampError {
    /// A signature or field was not found.
    #[error("{format} header: {what}")]
    Unexpected {
        /// vmdk, vdi or vhd.
        format: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}

/// Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z).
const VHD_EPOCH: u64 = 946_684_800;

/// Replaces the 8 hex digits after `CID=` in a VMDK's embedded descriptor
/// (`head` is the start of the file, at least the descriptor).
pub fn vmdk(head: &mut [u8], seed: &Seed) -> Result<(), StampError> {
    let err = |what| StampError::Unexpected {
        format: "vmdk",
        what,
    };
    if head.len() < 1024 || &head[0..4] != b"KDMV" {
        return Err(err("no KDMV sparse extent magic"));
    }
    let needle = b"\nCID=";
    let at = head
        .windows(needle.len())
        .position(|w| w == needle)
        .ok_or(err("no CID= line in the descriptor"))?
        + needle.len();
    let digits = head.get(at..at + 8).ok_or(err("CID= truncated"))?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(err("CID= is not 8 hex digits"));
    }
    // CID ffffffff means "no parent"/invalid; avoid it.
    let cid = seed.serial("vmdk-cid") & 0x7fff_ffff;
    head[at..at + 8].copy_from_slice(format!("{cid:08x}").as_bytes());
    Ok(())
}

/// Sets the VDI image and last-snapshot UUIDs (`head`: the first 512 bytes).
pub fn vdi(head: &mut [u8], seed: &Seed) -> Result<(), StampError> {
    let err = |what| StampError::Unexpected {
        format: "vdi",
        what,
    };
    if head.len() < 512 || head[0x40..0x44] != [0x7f, 0x10, 0xda, 0xbe] {
        return Err(err("no VDI signature 0xbeda107f"));
    }
    head[0x188..0x198].copy_from_slice(&seed.guid("vdi-image").to_bytes_le());
    head[0x198..0x1a8].copy_from_slice(&seed.guid("vdi-snapshot").to_bytes_le());
    Ok(())
}

/// Sets the VHD footer's time stamp (SOURCE_DATE_EPOCH) and unique id and
/// recomputes its checksum (`footer`: the last 512 bytes of the file).
pub fn vhd(footer: &mut [u8], seed: &Seed, epoch: u64) -> Result<(), StampError> {
    if footer.len() != 512 || &footer[0..8] != b"conectix" {
        return Err(StampError::Unexpected {
            format: "vhd",
            what: "no conectix footer in the last sector",
        });
    }
    let t = epoch.saturating_sub(VHD_EPOCH).min(u32::MAX as u64) as u32;
    footer[24..28].copy_from_slice(&t.to_be_bytes());
    footer[68..84].copy_from_slice(seed.guid("vhd").as_bytes());
    footer[64..68].copy_from_slice(&[0; 4]);
    let sum = footer.iter().fold(0u32, |s, &b| s.wrapping_add(b as u32));
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmdk_cid_is_replaced_in_place() {
        let mut h = vec![0u8; 2048];
        h[0..4].copy_from_slice(b"KDMV");
        let desc = b"# Disk DescriptorFile\nversion=1\nCID=f988e57b\nparentCID=ffffffff\n";
        h[512..512 + desc.len()].copy_from_slice(desc);
        let mut other = h.clone();
        other[512 + 36..512 + 44].copy_from_slice(b"12345678");
        vmdk(&mut h, &Seed([3; 32])).unwrap();
        vmdk(&mut other, &Seed([3; 32])).unwrap();
        assert_eq!(h, other);
        let text = String::from_utf8_lossy(&h[512..512 + desc.len()]).into_owned();
        assert!(text.contains("parentCID=ffffffff\n"), "{text}");
        assert!(!text.contains("CID=f988e57b"), "{text}");
        assert_eq!(
            vmdk(&mut [0u8; 2048], &Seed([3; 32]))
                .unwrap_err()
                .to_string(),
            "vmdk header: no KDMV sparse extent magic"
        );
    }

    #[test]
    fn vhd_checksum_is_valid() {
        let mut f = vec![0u8; 512];
        f[0..8].copy_from_slice(b"conectix");
        f[100] = 7;
        vhd(&mut f, &Seed([4; 32]), 1_704_067_200).unwrap();
        assert_eq!(&f[24..28], &(1_704_067_200u32 - 946_684_800).to_be_bytes());
        let stored = u32::from_be_bytes([f[64], f[65], f[66], f[67]]);
        let mut z = f.clone();
        z[64..68].copy_from_slice(&[0; 4]);
        let sum = z.iter().fold(0u32, |s, &b| s.wrapping_add(b as u32));
        assert_eq!(stored, !sum);
    }

    #[test]
    fn vdi_needs_its_signature() {
        let mut h = vec![0u8; 512];
        assert!(vdi(&mut h, &Seed([5; 32])).is_err());
        h[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        vdi(&mut h, &Seed([5; 32])).unwrap();
        assert_ne!(&h[0x188..0x198], &[0u8; 16]);
    }
}
