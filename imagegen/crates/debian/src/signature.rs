//! OpenPGP verification of `InRelease` (a clearsigned `Release`) against a
//! keyring such as `/usr/share/keyrings/debian-archive-keyring.gpg`.
//!
//! The text handed back is the *signed* text extracted by the OpenPGP
//! library, never the raw file, so nothing outside the signature can be
//! smuggled in. A file is accepted when at least one signature verifies
//! against a key (or subkey) of the keyring, like apt does with `Signed-By`.
//! Key expiry and revocation are not evaluated: the Debian keyring package
//! moves retired keys into a separate `removed-keys` keyring.

use std::io::BufReader;
use std::path::Path;

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The keyring file could not be read.
    #[error("cannot read keyring {keyring}: {source}")]
    ReadKeyring {
        /// The keyring path.
        keyring: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The keyring holds no usable public key.
    #[error("keyring {keyring} contains no usable OpenPGP public key ({detail})")]
    NoKeys {
        /// The keyring path.
        keyring: String,
        /// Parser detail.
        detail: String,
    },
    /// The file is not a clearsigned OpenPGP message.
    #[error("{file} is not a valid clearsigned OpenPGP message: {detail}")]
    Malformed {
        /// The signed file (URL or path).
        file: String,
        /// Parser detail.
        detail: String,
    },
    /// No signature verified against any key of the keyring.
    #[error("{file}: no valid signature by a key in {keyring} (tampered file or wrong keyring; {signatures} signature(s) checked)")]
    Invalid {
        /// The signed file.
        file: String,
        /// The keyring path.
        keyring: String,
        /// How many signatures the file carried.
        signatures: usize,
    },
}

/// A set of trusted public keys.
#[derive(Debug, Clone)]
pub struct Keyring {
    name: String,
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Reads a binary or ASCII-armored keyring with one or more keys.
    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SignatureError::ReadKeyring {
            keyring: name.clone(),
            source,
        })?;
        Self::from_bytes(&bytes, &name)
    }

    /// Parses keyring bytes; `name` identifies it in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self, SignatureError> {
        let no_keys = |detail: String| SignatureError::NoKeys {
            keyring: name.into(),
            detail,
        };
        let armored = bytes.starts_with(b"-----BEGIN");
        let iter: Box<dyn Iterator<Item = pgp::errors::Result<SignedPublicKey>>> = if armored {
            SignedPublicKey::from_armor_many(BufReader::new(bytes))
                .map_err(|e| no_keys(e.to_string()))?
                .0
        } else {
            SignedPublicKey::from_bytes_many(BufReader::new(bytes))
                .map_err(|e| no_keys(e.to_string()))?
        };
        let mut keys = Vec::new();
        let mut last_err = String::from("empty");
        for key in iter {
            match key {
                Ok(k) => keys.push(k),
                Err(e) => {
                    // One unsupported key must not make the others unusable.
                    tracing::debug!(keyring = name, error = %e, "skipping unparsable key");
                    last_err = e.to_string();
                }
            }
        }
        if keys.is_empty() {
            return Err(no_keys(last_err));
        }
        Ok(Keyring {
            name: name.into(),
            keys,
        })
    }

    /// Builds a keyring from parsed keys (tests, embedded keys).
    pub fn from_keys(keys: Vec<SignedPublicKey>, name: &str) -> Self {
        Keyring {
            name: name.into(),
            keys,
        }
    }

    /// Where the keyring came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a clearsigned text and returns the signed text (with `\n`
    /// line endings). `file` names it in errors.
    pub fn verify_clearsigned(&self, text: &str, file: &str) -> Result<String, SignatureError> {
        let (msg, _headers) =
            CleartextSignedMessage::from_string(text).map_err(|e| SignatureError::Malformed {
                file: file.into(),
                detail: e.to_string(),
            })?;
        let verified = self.keys.iter().any(|key| {
            msg.verify(key).is_ok() || key.public_subkeys.iter().any(|sub| msg.verify(sub).is_ok())
        });
        if !verified {
            return Err(SignatureError::Invalid {
                file: file.into(),
                keyring: self.name.clone(),
                signatures: msg.signatures().len(),
            });
        }
        let mut signed = msg.signed_text().replace("\r\n", "\n");
        if !signed.ends_with('\n') {
            signed.push('\n');
        }
        Ok(signed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pgp::composed::{KeyType, SecretKeyParamsBuilder, SignedSecretKey};
    use pgp::types::Password;
    use rand::SeedableRng;

    /// A fresh Ed25519 signing key, deterministic per seed.
    pub(crate) fn test_key(seed: u64) -> SignedSecretKey {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id(format!("Test Archive {seed} <archive@example.invalid>"))
            .build()
            .unwrap()
            .generate(&mut rng)
            .unwrap()
    }

    /// Clearsigns `text` with `key`.
    pub(crate) fn clearsign(text: &str, key: &SignedSecretKey) -> String {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        CleartextSignedMessage::sign(&mut rng, text, &**key, &Password::empty())
            .unwrap()
            .to_armored_string(Default::default())
            .unwrap()
    }

    pub(crate) fn keyring_of(key: &SignedSecretKey) -> Keyring {
        Keyring::from_keys(vec![key.to_public_key()], "test-keyring.gpg")
    }

    const RELEASE: &str = "Origin: Test\nCodename: test\nSHA256:\n aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1 main/binary-amd64/Packages\n";

    #[test]
    fn good_signature_returns_signed_text() {
        let key = test_key(1);
        let signed = clearsign(RELEASE, &key);
        assert!(signed.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"));
        let text = keyring_of(&key)
            .verify_clearsigned(&signed, "InRelease")
            .unwrap();
        assert_eq!(text, RELEASE);
    }

    #[test]
    fn keyring_with_several_keys_finds_the_signer() {
        let (k1, k2) = (test_key(1), test_key(2));
        let ring = Keyring::from_keys(vec![k1.to_public_key(), k2.to_public_key()], "two.gpg");
        let signed = clearsign(RELEASE, &k2);
        assert_eq!(
            ring.verify_clearsigned(&signed, "InRelease").unwrap(),
            RELEASE
        );
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn wrong_key_fails_naming_file_and_keyring() {
        let signed = clearsign(RELEASE, &test_key(1));
        let err = keyring_of(&test_key(2))
            .verify_clearsigned(
                &signed,
                "http://archive.example/debian/dists/test/InRelease",
            )
            .unwrap_err();
        assert!(
            matches!(err, SignatureError::Invalid { signatures: 1, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("dists/test/InRelease") && msg.contains("test-keyring.gpg"),
            "{msg}"
        );
    }

    #[test]
    fn tampered_text_fails() {
        let key = test_key(1);
        let signed = clearsign(RELEASE, &key);
        let tampered = signed.replace("aaaaaaaa", "bbbbbbbb");
        assert_ne!(signed, tampered);
        let err = keyring_of(&key)
            .verify_clearsigned(&tampered, "InRelease")
            .unwrap_err();
        assert!(matches!(err, SignatureError::Invalid { .. }), "{err}");
        let added = signed.replace("Origin: Test\n", "Origin: Test\nExtra: field\n");
        assert!(keyring_of(&key)
            .verify_clearsigned(&added, "InRelease")
            .is_err());
    }

    #[test]
    fn unsigned_or_garbage_is_malformed() {
        let ring = keyring_of(&test_key(1));
        let err = ring.verify_clearsigned(RELEASE, "InRelease").unwrap_err();
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
    }

    #[test]
    fn keyring_errors() {
        assert!(matches!(
            Keyring::read(Path::new("/nonexistent/keyring.gpg")),
            Err(SignatureError::ReadKeyring { .. })
        ));
        assert!(matches!(
            Keyring::from_bytes(b"not a key", "junk.gpg"),
            Err(SignatureError::NoKeys { .. })
        ));
    }

    #[test]
    fn binary_keyring_file_roundtrip() {
        use pgp::ser::Serialize;
        let (k1, k2) = (test_key(3), test_key(4));
        let mut bytes = Vec::new();
        k1.to_public_key().to_writer(&mut bytes).unwrap();
        k2.to_public_key().to_writer(&mut bytes).unwrap();
        let ring = Keyring::from_bytes(&bytes, "bin.gpg").unwrap();
        assert_eq!(ring.len(), 2);
        let signed = clearsign(RELEASE, &k2);
        assert!(ring.verify_clearsigned(&signed, "InRelease").is_ok());
    }
}
