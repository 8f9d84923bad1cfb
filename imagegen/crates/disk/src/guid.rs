//! Deterministic GUIDs and serials.
//!
//! Every identifier in the disk image (disk GUID, partition GUIDs, the FAT
//! volume serial) is derived from a seed (the SHA-256 of the image's
//! `manifest.json`, which pins the profile, every package and the outputs'
//! hashes) and a purpose string, so the same profile + lockfile gives the
//! same identifiers and two different images never share them.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A 32-byte seed from which all identifiers of one image are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub [u8; 32]);

impl Seed {
    /// The seed of an image: SHA-256 of its manifest bytes.
    pub fn from_manifest(manifest: &[u8]) -> Seed {
        Seed(Sha256::digest(manifest).into())
    }

    fn digest(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"kubeboot-disk\0");
        h.update(self.0);
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// A well-formed (RFC 9562 version 4, variant 1) GUID for `purpose`.
    pub fn guid(&self, purpose: &str) -> Uuid {
        let d = self.digest(purpose);
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }

    /// A 32-bit serial (the FAT volume id) for `purpose`.
    pub fn serial(&self, purpose: &str) -> u32 {
        let d = self.digest(purpose);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_different_purpose_different_ids() {
        let a = Seed::from_manifest(b"{\"profile\":\"master\"}");
        let b = Seed::from_manifest(b"{\"profile\":\"master\"}");
        let c = Seed::from_manifest(b"{\"profile\":\"worker\"}");
        assert_eq!(a.guid("disk"), b.guid("disk"));
        assert_ne!(a.guid("disk"), a.guid("esp"));
        assert_ne!(a.guid("disk"), c.guid("disk"));
        assert_eq!(a.guid("disk").get_version_num(), 4);
        assert_eq!(a.serial("fat"), b.serial("fat"));
        assert_ne!(a.serial("fat"), c.serial("fat"));
    }
}
