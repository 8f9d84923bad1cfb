//! Deterministic key derivation from the cluster secret (pure).
//!
//! Every CA key (and the service-account key) is an ECDSA P-256 private
//! scalar expanded with HKDF-SHA256 (RFC 5869) from the cluster secret:
//!
//! ```text
//! prk    = HKDF-Extract(salt = "kubeboot/pki/v1", ikm = cluster secret)
//! okm(i) = HKDF-Expand(prk, info = "kubeboot/pki/v1/<label>/<cluster name>/<i>", 32)
//! key    = the first okm(i), i = 0, 1, ..., that is a valid scalar (1 <= k < n)
//! ```
//!
//! A 32-byte string is out of range with probability about 2^-32, so the
//! retry loop practically never runs twice; it exists so no input can make
//! derivation fail. Labels are distinct per CA, so the CAs' keys are
//! independent. The same labels with the `serial` prefix give each CA a
//! fixed serial number.
//!
//! The service-account key is RSA (kubeadm before 1.25 loads nothing else
//! for `sa.key`): a 32-byte seed expanded the same way seeds ChaCha20
//! (`rand_chacha`), and `rsa::RsaPrivateKey::new` searches its primes with
//! that generator. The result is deterministic for a given `rsa` version
//! (pinned to `=0.9.10`, with `num-bigint-dig` from `Cargo.lock`); a golden
//! test (`tests/pki.rs`) fails if an update changes the derived key.

use cluster_config::ClusterSecret;
use hkdf::Hkdf;
use p256::SecretKey;
use rand_chacha::rand_core::SeedableRng as _;
use rsa::RsaPrivateKey;
use sha2::Sha256;

use crate::PkiError;

/// HKDF salt: names the scheme and its version, so a future scheme (v2)
/// derives unrelated keys from the same secret.
const SALT: &[u8] = b"kubeboot/pki/v1";

/// How many HKDF blocks to try before giving up (each fails with p ~ 2^-32).
const MAX_TRIES: u32 = 16;

/// Expands `len` bytes for `label` (and a counter) from the cluster secret.
fn expand(
    secret: &ClusterSecret,
    cluster_name: &str,
    label: &str,
    counter: u32,
    out: &mut [u8],
) -> Result<(), PkiError> {
    let hk = Hkdf::<Sha256>::new(Some(SALT), secret.expose());
    let info = format!("kubeboot/pki/v1/{label}/{cluster_name}/{counter}");
    hk.expand(info.as_bytes(), out)
        .map_err(|_| PkiError::Derive {
            label: label.to_owned(),
            reason: "HKDF output length out of range".to_owned(),
        })
}

/// Derives the P-256 private key for `label` (for example `etcd-ca`).
pub(crate) fn derive_p256(
    secret: &ClusterSecret,
    cluster_name: &str,
    label: &str,
) -> Result<SecretKey, PkiError> {
    for counter in 0..MAX_TRIES {
        let mut okm = [0u8; 32];
        expand(secret, cluster_name, label, counter, &mut okm)?;
        // `from_slice` rejects zero and values >= the group order n.
        let candidate = SecretKey::from_slice(&okm);
        okm.fill(0);
        if let Ok(key) = candidate {
            return Ok(key);
        }
    }
    Err(PkiError::Derive {
        label: label.to_owned(),
        reason: format!("no valid P-256 scalar in {MAX_TRIES} HKDF blocks"),
    })
}

/// Derives an RSA private key of `bits` for `label`: the primes are
/// searched with ChaCha20 seeded from the secret (see the module docs).
pub(crate) fn derive_rsa(
    secret: &ClusterSecret,
    cluster_name: &str,
    label: &str,
    bits: usize,
) -> Result<RsaPrivateKey, PkiError> {
    let mut seed = [0u8; 32];
    expand(secret, cluster_name, label, 0, &mut seed)?;
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    seed.fill(0);
    RsaPrivateKey::new(&mut rng, bits).map_err(|e| PkiError::Derive {
        label: label.to_owned(),
        reason: format!("RSA key generation: {e}"),
    })
}

/// Derives a positive 16-byte certificate serial number for `label`.
pub(crate) fn derive_serial(
    secret: &ClusterSecret,
    cluster_name: &str,
    label: &str,
) -> Result<[u8; 16], PkiError> {
    let mut serial = [0u8; 16];
    expand(
        secret,
        cluster_name,
        &format!("serial/{label}"),
        0,
        &mut serial,
    )?;
    // Positive (RFC 5280 §4.1.2.2) and never zero.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s).unwrap()
    }

    #[test]
    fn same_inputs_same_key_and_labels_independent() {
        let s = secret("0123456789abcdef-secret");
        let a = derive_p256(&s, "c1", "etcd-ca").unwrap();
        let b = derive_p256(&s, "c1", "etcd-ca").unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        let other_label = derive_p256(&s, "c1", "kubernetes-ca").unwrap();
        assert_ne!(a.to_bytes(), other_label.to_bytes());
        let other_cluster = derive_p256(&s, "c2", "etcd-ca").unwrap();
        assert_ne!(a.to_bytes(), other_cluster.to_bytes());
        let other_secret =
            derive_p256(&secret("0123456789abcdef-secreT"), "c1", "etcd-ca").unwrap();
        assert_ne!(a.to_bytes(), other_secret.to_bytes());
    }

    #[test]
    fn serial_is_positive_and_nonzero() {
        let s = secret("0123456789abcdef-secret");
        for label in ["a", "b", "c", "etcd-ca", "kubernetes-ca"] {
            let serial = derive_serial(&s, "c1", label).unwrap();
            assert_eq!(serial[0] & 0x80, 0);
            assert_ne!(serial[0], 0);
        }
    }
}
