//! The CA public key pin kubeadm checks during token discovery
//! (`discovery.bootstrapToken.caCertHashes`): `sha256:` and the hex SHA-256
//! of the CA certificate's DER SubjectPublicKeyInfo. The pki crate computes
//! it ([`pki::Ca::spki_pin`]); this newtype checks its shape so a malformed
//! pin from elsewhere (a discovery message) cannot reach kubeadm.

use std::fmt;

use thiserror::Error;

/// A pin string is not `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{what}: {value:?} is not a CA pin of the form sha256:<64 hex digits>")]
pub struct PinError {
    /// Where the pin came from.
    pub what: String,
    /// The rejected text (public: a pin is a hash of a public key).
    pub value: String,
}

/// A checked `sha256:<hex>` CA public key pin.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CaPin(String);

impl CaPin {
    /// The pin of a CA from the pki crate.
    pub fn of(ca: &pki::Ca) -> Self {
        // `spki_pin` always has the checked shape.
        Self(ca.spki_pin())
    }

    /// Checks and wraps a pin string; `what` names its source.
    pub fn parse(text: &str, what: &str) -> Result<Self, PinError> {
        let hex_part = text.strip_prefix("sha256:");
        let ok = hex_part.is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(PinError {
                what: what.to_owned(),
                value: text.to_owned(),
            })
        }
    }

    /// The pin text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({})", self.0)
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_sha256_hex64() {
        let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(CaPin::parse(&good, "x").unwrap().as_str(), good);
        for bad in [
            "".to_owned(),
            "0123456789abcdef".repeat(4),
            format!("sha1:{}", "0123456789abcdef".repeat(4)),
            format!("sha256:{}", "0123456789ABCDEF".repeat(4)),
            format!("sha256:{}", "0123456789abcdef".repeat(3)),
            format!("sha256:{}0", "0123456789abcdef".repeat(4)),
            format!("sha256:{}g", &"0123456789abcdef".repeat(4)[1..]),
        ] {
            let err = CaPin::parse(&bad, "discovery").unwrap_err();
            assert_eq!(err.what, "discovery");
        }
    }
}
