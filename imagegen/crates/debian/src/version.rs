//! Debian version numbers and their ordering.
//!
//! A version is `[epoch:]upstream_version[-debian_revision]`, compared as
//! Debian Policy §5.6.12 describes: epochs numerically, then the upstream
//! version and the revision with the `dpkg` algorithm (alternating non-digit
//! and digit runs; letters sort before non-letters and `~` sorts before
//! everything, even the end of the string).
//!
//! Written by hand because the algorithm is a page of the Policy, is needed
//! on hot paths of the resolver (tens of thousands of comparisons), and the
//! crates that implement it pull in regex engines for parsing.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a version string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The string was empty.
    #[error("empty version")]
    Empty,
    /// The epoch (before the first `:`) is not a decimal number.
    #[error("version {version:?}: epoch is not a number")]
    BadEpoch {
        /// The rejected version string.
        version: String,
    },
    /// The upstream part is empty or does not start with a digit.
    #[error("version {version:?}: upstream version must start with a digit")]
    BadUpstream {
        /// The rejected version string.
        version: String,
    },
    /// A trailing `-` with no revision after it.
    #[error("version {version:?}: empty Debian revision after `-`")]
    EmptyRevision {
        /// The rejected version string.
        version: String,
    },
    /// A character outside Policy's allowed set.
    #[error("version {version:?}: character {ch:?} is not allowed")]
    BadChar {
        /// The rejected version string.
        version: String,
        /// The offending character.
        ch: char,
    },
}

/// A parsed Debian version; `Ord` follows Debian Policy §5.6.12.
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u64,
    upstream: String,
    revision: String,
}

impl Version {
    /// The epoch (0 when absent).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// The upstream version.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }
    /// The Debian revision (empty when absent).
    pub fn revision(&self) -> &str {
        &self.revision
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VersionError::BadEpoch { version: s.into() });
                }
                let epoch = e
                    .parse()
                    .map_err(|_| VersionError::BadEpoch { version: s.into() })?;
                (epoch, rest)
            }
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((_, "")) => return Err(VersionError::EmptyRevision { version: s.into() }),
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(VersionError::BadUpstream { version: s.into() });
        }
        let allowed_up = |c: char| c.is_ascii_alphanumeric() || ".+~-:".contains(c);
        if let Some(ch) = upstream.chars().find(|c| !allowed_up(*c)) {
            return Err(VersionError::BadChar {
                version: s.into(),
                ch,
            });
        }
        let allowed_rev = |c: char| c.is_ascii_alphanumeric() || ".+~".contains(c);
        if let Some(ch) = revision.chars().find(|c| !allowed_rev(*c)) {
            return Err(VersionError::BadChar {
                version: s.into(),
                ch,
            });
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An upstream part with a colon needs its epoch written, even 0.
        if self.epoch != 0 || self.upstream.contains(':') {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(&self.upstream, &other.upstream))
            .then_with(|| compare_part(&self.revision, &other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// Sort weight of one character in a non-digit run (dpkg's `order()`):
/// `~` lowest, then the end of the run, then letters, then everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Compares an upstream version or a revision (Policy §5.6.12).
fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix, character by character.
        loop {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let (oa, ob) = (order(ca), order(cb));
            if oa != ob {
                return oa.cmp(&ob);
            }
            i += 1;
            j += 1;
        }
        // Digit run, numerically: skip leading zeros, longer run wins, then lexical.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let si = i;
        while a.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let sj = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let by_len = da.len().cmp(&db.len());
        if by_len != Ordering::Equal {
            return by_len;
        }
        let lexical = da.cmp(db);
        if lexical != Ordering::Equal {
            return lexical;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn known_orderings() {
        // Each pair: left < right. From Debian Policy §5.6.12, dpkg's test suite
        // (lib/dpkg/t/t-version.c) and real archive versions.
        let less = [
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~~a"),
            ("1.0~~a", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
            ("1.0a", "1.0+"),
            ("1.0", "1.0.1"),
            ("1.0", "1.0-1"),
            ("1.0-1", "1.0-2"),
            ("1.0-2", "1.0-10"),
            ("1.9", "1.10"),
            ("1.0-1", "1.0-1+b1"),
            ("1.0-1~bpo1", "1.0-1"),
            ("1:0.1", "2:0.0"),
            ("9.9", "1:0.1"),
            ("0.9", "1.0"),
            ("1.2.3", "1.2.3.0"),
            ("1.0a", "1.0b"),
            ("1.0A", "1.0a"),
            ("2.36-9", "2.36-9+deb12u4"),
            ("252.17-1~deb12u1", "252.17-1"),
            ("1.6.20~ds1-1", "1.6.20-1"),
            ("0", "0.0"),
            ("1.0+dfsg", "1.0.0"),
            ("1.0.", "1.0.a"),
            ("6.1.0-18", "6.1.0-28"),
            ("3.4.23-4", "3.4.23-4+b1"),
        ];
        for (a, b) in less {
            assert!(v(a) < v(b), "{a} < {b}");
            assert!(v(b) > v(a), "{b} > {a}");
            assert_ne!(v(a), v(b));
        }
    }

    #[test]
    fn equal_orderings() {
        let equal = [
            ("1.0", "0:1.0"),
            ("1.01", "1.1"),
            ("1.000", "1.0"),
            ("1.0-0", "1.0-0"),
            ("1.0-1", "1.0-01"),
            ("00:1.0", "1.0"),
        ];
        for (a, b) in equal {
            assert_eq!(v(a).cmp(&v(b)), Ordering::Equal, "{a} == {b}");
        }
    }

    #[test]
    fn revision_split_is_on_last_hyphen() {
        let x = v("1:2.3-4-5");
        assert_eq!(x.epoch(), 1);
        assert_eq!(x.upstream(), "2.3-4");
        assert_eq!(x.revision(), "5");
        assert_eq!(x.to_string(), "1:2.3-4-5");
        assert_eq!(v("2.0").to_string(), "2.0");
        assert_eq!(v("0:1:2").to_string(), "0:1:2");
        assert_eq!(v("0:1:2"), v("0:1:2").to_string().parse().unwrap());
    }

    #[test]
    fn sorting_a_list() {
        let mut vs: Vec<Version> = ["1.0", "1.0~rc1", "1:0.5", "1.0-1", "0.9", "1.0+b1"]
            .iter()
            .map(|s| v(s))
            .collect();
        vs.sort();
        let got: Vec<String> = vs.iter().map(|v| v.to_string()).collect();
        assert_eq!(got, ["0.9", "1.0~rc1", "1.0", "1.0-1", "1.0+b1", "1:0.5"]);
    }

    #[test]
    fn rejects_invalid() {
        assert_eq!("".parse::<Version>(), Err(VersionError::Empty));
        assert!(matches!(
            "a:1.0".parse::<Version>(),
            Err(VersionError::BadEpoch { .. })
        ));
        assert!(matches!(
            ":1.0".parse::<Version>(),
            Err(VersionError::BadEpoch { .. })
        ));
        assert!(matches!(
            "abc".parse::<Version>(),
            Err(VersionError::BadUpstream { .. })
        ));
        assert!(matches!(
            "1:-1".parse::<Version>(),
            Err(VersionError::BadUpstream { .. })
        ));
        assert!(matches!(
            "1.0 beta".parse::<Version>(),
            Err(VersionError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            "1.0-a_b".parse::<Version>(),
            Err(VersionError::BadChar { ch: '_', .. })
        ));
        assert!(matches!(
            "1-2-".parse::<Version>(),
            Err(VersionError::EmptyRevision { .. })
        ));
    }
}
