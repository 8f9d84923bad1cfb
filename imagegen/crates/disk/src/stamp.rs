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

/// Replaces the content id after `CID=` in a VMDK's embedded descriptor
/// (`head` is the start of the file, at least the descriptor area).
///
/// qemu-img prints the random CID with `%x`, so it has one to eight digits.
/// The replacement always has eight, and the rest of the descriptor text
/// moves right into the zero padding of the descriptor area (bounded by the
/// header's descriptor offset and size) so the output never depends on how
/// many digits the random value happened to have.
pub fn vmdk(head: &mut [u8], seed: &Seed) -> Result<(), StampError> {
    let err = |what| StampError::Unexpected {
        format: "vmdk",
        what,
    };
    if head.len() < 1024 || &head[0..4] != b"KDMV" {
        return Err(err("no KDMV sparse extent magic"));
    }
    let sectors = |off: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[off..off + 8]);
        usize::try_from(u64::from_le_bytes(b)).unwrap_or(usize::MAX)
    };
    // VMDK4 sparse header: descriptor offset and size (in sectors) at 28, 36.
    let desc_start = sectors(28).saturating_mul(512);
    let desc_end = desc_start
        .saturating_add(sectors(36).saturating_mul(512))
        .min(head.len());
    let desc = head
        .get(desc_start..desc_end)
        .filter(|d| !d.is_empty())
        .ok_or(err("descriptor area outside the header read"))?;
    let needle = b"\nCID=";
    let at = desc
        .windows(needle.len())
        .position(|w| w == needle)
        .ok_or(err("no CID= line in the descriptor"))?
        + needle.len();
    let digits = desc[at..]
        .iter()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    if !(1..=8).contains(&digits) || desc.get(at + digits) != Some(&b'\n') {
        return Err(err("CID= is not 1 to 8 hex digits"));
    }
    let text_end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    let grow = 8 - digits;
    if text_end + grow > desc.len() {
        return Err(err("no room in the descriptor area for an 8-digit CID"));
    }
    let (at, text_end) = (desc_start + at, desc_start + text_end);
    head.copy_within(at + digits..text_end, at + 8);
    // CID ffffffff means "no parent"/invalid; the top bit pattern 0x1..0x7
    // keeps the value at exactly eight digits and away from it.
    let cid = 0x1000_0000 | (seed.serial("vmdk-cid") % 0x7000_0000);
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

    /// A sparse header whose descriptor (sector 1, 20 sectors) says `cid`.
    fn vmdk_head(cid: &str) -> Vec<u8> {
        let mut h = vec![0u8; 64 << 10];
        h[0..4].copy_from_slice(b"KDMV");
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        let desc = format!("# Disk DescriptorFile\nversion=1\nCID={cid}\nparentCID=ffffffff\n");
        h[512..512 + desc.len()].copy_from_slice(desc.as_bytes());
        h
    }

    #[test]
    fn vmdk_cid_is_the_same_whatever_qemu_img_drew() {
        let seed = Seed([3; 32]);
        let mut outs = Vec::new();
        for cid in ["f988e57b", "12345678", "abc", "0"] {
            let mut h = vmdk_head(cid);
            vmdk(&mut h, &seed).unwrap();
            outs.push(h);
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]));
        let text = String::from_utf8_lossy(&outs[0][512..1024]).into_owned();
        let text = text.trim_end_matches('\0');
        assert!(text.ends_with("\nparentCID=ffffffff\n"), "{text}");
        let cid = text
            .split("\nCID=")
            .nth(1)
            .unwrap()
            .split('\n')
            .next()
            .unwrap();
        assert_eq!(cid.len(), 8, "{text}");
        assert_ne!(cid, "ffffffff");
        assert_eq!(
            vmdk(&mut [0u8; 2048], &seed).unwrap_err().to_string(),
            "vmdk header: no KDMV sparse extent magic"
        );
        assert_eq!(
            vmdk(&mut vmdk_head("xyz"), &seed).unwrap_err().to_string(),
            "vmdk header: CID= is not 1 to 8 hex digits"
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
