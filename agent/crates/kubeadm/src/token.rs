//! The kubeadm bootstrap token: derived from the cluster secret (pure), its
//! lifetime, and the decision to recreate it for a late joiner.
//!
//! Format (kubeadm's `BootstrapTokenString`, and the bootstrap-token
//! Secret's `token-id`/`token-secret`): `[a-z0-9]{6}.[a-z0-9]{16}`.
//!
//! Derivation:
//!
//! ```text
//! prk      = HKDF-Extract(salt = "kubeboot/kubeadm-token/v1", ikm = cluster secret)
//! block(i) = HKDF-Expand(prk, info = "kubeboot/kubeadm-token/v1/<cluster name>/<i>", 64)
//! ```
//!
//! The 22 characters come from the blocks' bytes by rejection sampling:
//! a byte `b < 252` (= 7 × 36) gives `ALPHABET[b % 36]`, a byte `>= 252`
//! is dropped. Every character is then exactly uniform over the 36 (a plain
//! `b % 36` would favour the first 4 characters). A 64-byte block almost
//! always suffices; further blocks are expanded only when it does not.
//!
//! Every node that knows the secret computes the same token, so no node
//! has to hand it to another: the init node creates it in the cluster, the
//! joiners present it.

use std::fmt;
use std::time::{Duration, SystemTime};

use cluster_config::ClusterSecret;
use hkdf::Hkdf;
use serde::Deserialize;
use sha2::Sha256;
use thiserror::Error;

/// HKDF salt: names the scheme and its version.
const SALT: &[u8] = b"kubeboot/kubeadm-token/v1";
/// The bootstrap token alphabet (kubeadm's `[a-z0-9]`).
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Largest multiple of 36 not above 256: bytes at or above it are dropped.
const ACCEPT_BELOW: u8 = 252;
/// Length of the token id.
const ID_LEN: usize = 6;
/// Length of the token secret.
const SECRET_LEN: usize = 16;

/// The default lifetime of the bootstrap token (kubeadm's default too).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// A token shorter-lived than this is recreated before a joiner uses it:
/// a join (discovery plus TLS bootstrap) takes well under this.
pub const MIN_REMAINING: Duration = Duration::from_secs(15 * 60);

/// Errors about bootstrap tokens.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    /// HKDF refused the output length (cannot happen for 64 bytes).
    #[error("deriving the bootstrap token: HKDF output length out of range")]
    Derive,
    /// A string is not of the form `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("{what} is not a bootstrap token of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    Format {
        /// Where the string came from (never the string: it may be secret).
        what: String,
    },
    /// `kubeadm token list -o json` printed something that is not JSON.
    #[error("parsing the output of `kubeadm token list -o json`: {reason}")]
    ListOutput {
        /// The parser's message.
        reason: String,
    },
}

/// A bootstrap token. `Debug` shows only the (public) token id.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

fn valid_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BootstrapToken {
    /// Derives the cluster's token from its secret and name (pure,
    /// deterministic: the same inputs give the same token on every node).
    pub fn derive(secret: &ClusterSecret, cluster_name: &str) -> Result<Self, TokenError> {
        let hk = Hkdf::<Sha256>::new(Some(SALT), secret.expose());
        let mut chars = Vec::with_capacity(ID_LEN + SECRET_LEN);
        let mut block_index: u32 = 0;
        while chars.len() < ID_LEN + SECRET_LEN {
            let mut block = [0u8; 64];
            let info = format!("kubeboot/kubeadm-token/v1/{cluster_name}/{block_index}");
            hk.expand(info.as_bytes(), &mut block)
                .map_err(|_| TokenError::Derive)?;
            for b in block {
                if b < ACCEPT_BELOW && chars.len() < ID_LEN + SECRET_LEN {
                    chars.push(ALPHABET[usize::from(b % 36)]);
                }
            }
            block.fill(0);
            block_index += 1;
        }
        // Only ASCII from ALPHABET was pushed.
        let text = String::from_utf8_lossy(&chars).into_owned();
        Ok(Self {
            id: text[..ID_LEN].to_owned(),
            secret: text[ID_LEN..].to_owned(),
        })
    }

    /// Parses `id.secret`; `what` names the source in the error.
    pub fn parse(text: &str, what: &str) -> Result<Self, TokenError> {
        let bad = || TokenError::Format {
            what: what.to_owned(),
        };
        let (id, secret) = text.trim().split_once('.').ok_or_else(bad)?;
        if !valid_part(id, ID_LEN) || !valid_part(secret, SECRET_LEN) {
            return Err(bad());
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The public token id (the `bootstrap-token-<id>` Secret's suffix).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The full token `id.secret`. Secret: do not log it.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// Formats a duration as kubeadm's `--ttl` / `ttl:` wants it (Go's
/// `time.ParseDuration` syntax), in whole seconds: `24h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
}

/// One token as `kubeadm token list -o json` reports it. Only the fields
/// the decision needs; others are ignored (kubeadm's output API adds
/// fields between releases).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedToken {
    /// `id.secret`.
    pub token: String,
    /// RFC 3339 expiry; absent for a token without expiry.
    #[serde(default)]
    pub expires: Option<String>,
}

/// Parses the output of `kubeadm token list -o json`: one JSON object per
/// token, concatenated (not an array). Returns the expiry of `token`'s
/// entry: `None` if it is not listed, `Some(None)` if it never expires.
pub fn listed_expiry(
    output: &str,
    token: &BootstrapToken,
) -> Result<Option<Option<SystemTime>>, TokenError> {
    let stream = serde_json::Deserializer::from_str(output).into_iter::<ListedToken>();
    for item in stream {
        let listed = item.map_err(|e| TokenError::ListOutput {
            reason: e.to_string(),
        })?;
        if listed.token.split_once('.').map(|(id, _)| id) != Some(token.id()) {
            continue;
        }
        let Some(expires) = listed.expires else {
            return Ok(Some(None));
        };
        let at =
            time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
                .map_err(|e| TokenError::ListOutput {
                reason: format!("expiry {expires:?}: {e}"),
            })?;
        let secs = at.unix_timestamp();
        let when = if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        };
        return Ok(Some(Some(when)));
    }
    Ok(None)
}

/// What to do about the bootstrap token on a control-plane node that can
/// reach the API (it has `admin.conf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    /// Nothing: no node is waiting to join, or the token lives long enough.
    Keep,
    /// The token is missing from the cluster: create it.
    Create,
    /// The token is listed but expired or about to: delete it (an expired
    /// token's Secret lingers until the token cleaner removes it, and
    /// `kubeadm token create` refuses an existing id), then create it.
    Recreate,
}

/// Decides whether the token must be (re)created. Pure.
///
/// A token is only brought back while some node is waiting to join
/// (`joiners_waiting`): otherwise it is left to expire, so a leaked token
/// (from a copied join file, say) stops being useful after its TTL.
/// `listed` is [`listed_expiry`]'s answer.
pub fn decide_token(
    now: SystemTime,
    listed: Option<Option<SystemTime>>,
    joiners_waiting: bool,
    min_remaining: Duration,
) -> TokenAction {
    if !joiners_waiting {
        return TokenAction::Keep;
    }
    match listed {
        None => TokenAction::Create,
        Some(None) => TokenAction::Keep,
        Some(Some(expires)) => match expires.duration_since(now) {
            Ok(left) if left >= min_remaining => TokenAction::Keep,
            _ => TokenAction::Recreate,
        },
    }
}

/// The kubeadm command lines (arguments after `kubeadm`) carrying out a
/// [`TokenAction`], run with the node's `admin.conf`.
pub fn token_commands(
    action: TokenAction,
    token: &BootstrapToken,
    ttl: Duration,
    admin_conf: &str,
) -> Vec<Vec<String>> {
    let create = vec![
        "token".to_owned(),
        "create".to_owned(),
        token.expose(),
        "--ttl".to_owned(),
        go_duration(ttl),
        "--description".to_owned(),
        TOKEN_DESCRIPTION.to_owned(),
        "--kubeconfig".to_owned(),
        admin_conf.to_owned(),
    ];
    match action {
        TokenAction::Keep => Vec::new(),
        TokenAction::Create => vec![create],
        TokenAction::Recreate => vec![
            vec![
                "token".to_owned(),
                "delete".to_owned(),
                token.id().to_owned(),
                "--kubeconfig".to_owned(),
                admin_conf.to_owned(),
            ],
            create,
        ],
    }
}

/// The description kubeboot gives its bootstrap token.
pub const TOKEN_DESCRIPTION: &str = "kubeboot: derived from the cluster secret";

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s).unwrap()
    }

    fn looks_right(t: &str) -> bool {
        let Some((id, sec)) = t.split_once('.') else {
            return false;
        };
        valid_part(id, 6) && valid_part(sec, 16)
    }

    #[test]
    fn derived_token_has_kubeadm_format_and_is_deterministic() {
        let a = BootstrapToken::derive(&secret("correct horse battery staple"), "c1").unwrap();
        let b = BootstrapToken::derive(&secret("correct horse battery staple"), "c1").unwrap();
        assert_eq!(a, b);
        assert!(looks_right(&a.expose()), "{}", a.expose());
        assert_eq!(a.expose().len(), 23);
        // Round-trips through the parser.
        assert_eq!(BootstrapToken::parse(&a.expose(), "test").unwrap(), a);
    }

    #[test]
    fn token_depends_on_secret_and_cluster_name() {
        let base = BootstrapToken::derive(&secret("correct horse battery staple"), "c1").unwrap();
        let other_secret =
            BootstrapToken::derive(&secret("correct horse battery stapler"), "c1").unwrap();
        let other_name =
            BootstrapToken::derive(&secret("correct horse battery staple"), "c2").unwrap();
        assert_ne!(base, other_secret);
        assert_ne!(base, other_name);
        assert_ne!(base.id(), other_name.id());
    }

    #[test]
    fn pinned_derivation_vector() {
        // Pins the scheme: changing salt, info or mapping changes this
        // value, and would strand nodes of an existing cluster.
        let t = BootstrapToken::derive(&secret("0123456789abcdef0123"), "kubeboot").unwrap();
        assert_eq!(t.expose(), PINNED);
    }
    // Computed independently (Python hmac/hashlib HKDF, same rejection rule).
    const PINNED: &str = "73rd9n.0mekrg7j8shndpv7";

    #[test]
    fn characters_are_spread_over_the_whole_alphabet() {
        // 400 derived tokens: 8800 characters; each of the 36 should show
        // up about 244 times. A mapping that never produced the last
        // characters, or favoured the first ones 2:1, fails this.
        let mut counts = [0u32; 36];
        for i in 0..400 {
            let t = BootstrapToken::derive(
                &secret("a-cluster-secret-of-some-length"),
                &format!("c{i}"),
            )
            .unwrap();
            for b in t.expose().bytes().filter(|b| *b != b'.') {
                let idx = ALPHABET.iter().position(|a| *a == b).unwrap();
                counts[idx] += 1;
            }
        }
        for (i, c) in counts.iter().enumerate() {
            assert!(
                (170..330).contains(c),
                "character {} appeared {c} times",
                ALPHABET[i] as char
            );
        }
    }

    #[test]
    fn parse_rejects_bad_tokens_without_echoing_them() {
        for bad in [
            "",
            "abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdefg",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdeff",
            "abcdef-0123456789abcdef",
            "abc_ef.0123456789abcdef",
        ] {
            let err = BootstrapToken::parse(bad, "the join file").unwrap_err();
            assert_eq!(
                err,
                TokenError::Format {
                    what: "the join file".into()
                }
            );
        }
        assert!(BootstrapToken::parse("abcdef.0123456789abcdef", "x").is_ok());
    }

    #[test]
    fn debug_hides_the_secret_half() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef", "x").unwrap();
        let d = format!("{t:?}");
        assert!(d.contains("abcdef"));
        assert!(!d.contains("0123456789abcdef"), "{d}");
    }

    #[test]
    fn go_duration_format() {
        assert_eq!(go_duration(DEFAULT_TOKEN_TTL), "24h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "0h1m30s");
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn token_decision_table() {
        let now = at(1_000_000);
        let m = MIN_REMAINING;
        let cases = [
            // (listed, joiners waiting, expected)
            (None, false, TokenAction::Keep),
            (Some(Some(at(0))), false, TokenAction::Keep),
            (None, true, TokenAction::Create),
            (Some(None), true, TokenAction::Keep),
            (Some(Some(at(1_000_000 + 3600))), true, TokenAction::Keep),
            (Some(Some(at(1_000_000 + 60))), true, TokenAction::Recreate),
            (Some(Some(at(999_000))), true, TokenAction::Recreate),
            (Some(Some(now)), true, TokenAction::Recreate),
        ];
        for (listed, waiting, want) in cases {
            assert_eq!(
                decide_token(now, listed, waiting, m),
                want,
                "{listed:?} {waiting}"
            );
        }
    }

    #[test]
    fn token_commands_for_each_action() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef", "x").unwrap();
        let admin = "/etc/kubernetes/admin.conf";
        assert!(token_commands(TokenAction::Keep, &t, DEFAULT_TOKEN_TTL, admin).is_empty());
        let create = token_commands(TokenAction::Create, &t, DEFAULT_TOKEN_TTL, admin);
        assert_eq!(
            create,
            vec![vec![
                "token",
                "create",
                "abcdef.0123456789abcdef",
                "--ttl",
                "24h0m0s",
                "--description",
                TOKEN_DESCRIPTION,
                "--kubeconfig",
                admin
            ]]
        );
        let re = token_commands(TokenAction::Recreate, &t, DEFAULT_TOKEN_TTL, admin);
        assert_eq!(re.len(), 2);
        assert_eq!(
            re[0],
            vec!["token", "delete", "abcdef", "--kubeconfig", admin]
        );
        assert_eq!(re[1], create[0]);
    }

    #[test]
    fn parses_token_list_output() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef", "x").unwrap();
        let out = r#"{
    "kind": "BootstrapToken",
    "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
    "token": "zzzzzz.0123456789abcdef",
    "expires": "2030-01-01T00:00:00Z",
    "usages": ["authentication", "signing"]
}
{
    "kind": "BootstrapToken",
    "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
    "token": "abcdef.0123456789abcdef",
    "description": "kubeboot",
    "expires": "2026-11-24T03:00:00Z",
    "usages": ["authentication", "signing"],
    "groups": ["system:bootstrappers:kubeadm:default-node-token"]
}"#;
        let exp = listed_expiry(out, &t).unwrap();
        assert_eq!(exp, Some(Some(at(1_795_489_200))));
        assert_eq!(listed_expiry("", &t).unwrap(), None);
        let never = r#"{"token": "abcdef.0123456789abcdef"}"#;
        assert_eq!(listed_expiry(never, &t).unwrap(), Some(None));
        assert!(matches!(
            listed_expiry("not json", &t),
            Err(TokenError::ListOutput { .. })
        ));
    }
}
