//! Relationship fields: `Depends`, `Pre-Depends`, `Provides`, `Conflicts`,
//! `Breaks` (Debian Policy §7.1).
//!
//! A field is a comma-separated list of groups that must all hold; a group
//! is a `|`-separated list of alternatives of which one must hold; an
//! alternative is `name[:arch] [(op version)] [[arch list]] [<profiles>]`.
//! Architecture lists and build profiles only appear in source packages but
//! are parsed (and the architecture list evaluated) so that any valid field
//! is accepted.
//!
//! Hand-written: the grammar is small, and the crates that parse it depend on
//! a lossless syntax-tree library that is far slower on whole indices.

use std::fmt;

use crate::version::{Version, VersionError};

/// A malformed relationship field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationError {
    /// A group between commas, or an alternative between bars, is empty.
    #[error("empty relation in {field:?}")]
    Empty {
        /// The whole field text.
        field: String,
    },
    /// The package name is not a valid Debian package name.
    #[error("invalid package name {name:?} in {field:?}")]
    BadName {
        /// The rejected name.
        name: String,
        /// The whole field text.
        field: String,
    },
    /// The `(op version)` part is malformed.
    #[error("invalid version constraint {constraint:?} in {field:?}")]
    BadConstraint {
        /// The text between the parentheses.
        constraint: String,
        /// The whole field text.
        field: String,
    },
    /// The version inside the constraint is invalid.
    #[error("invalid version in {field:?}: {source}")]
    BadVersion {
        /// The whole field text.
        field: String,
        /// Why the version was rejected.
        source: VersionError,
    },
    /// Unparsed text after an alternative (unclosed bracket and the like).
    #[error("unexpected {rest:?} in {field:?}")]
    Trailing {
        /// The text that could not be parsed.
        rest: String,
        /// The whole field text.
        field: String,
    },
}

/// A version comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<<` strictly earlier.
    Lt,
    /// `<=` earlier or equal.
    Le,
    /// `=` exactly equal.
    Eq,
    /// `>=` later or equal.
    Ge,
    /// `>>` strictly later.
    Gt,
}

impl Op {
    /// Whether `have op want` holds.
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        let o = have.cmp(want);
        match self {
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
            Op::Eq => o.is_eq(),
            Op::Ge => o.is_ge(),
            Op::Gt => o.is_gt(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }
}

/// One alternative: a package name with optional qualifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Package (or virtual package) name.
    pub name: String,
    /// Architecture qualifier after `:` (`any`, `native` or an architecture).
    pub arch_qualifier: Option<String>,
    /// Version constraint, if any.
    pub constraint: Option<(Op, Version)>,
    /// Architecture restriction list `[amd64 !i386]`; empty when absent.
    pub arch_list: Vec<String>,
}

impl Relation {
    /// Whether a package `version` of this name satisfies the constraint.
    pub fn version_matches(&self, version: &Version) -> bool {
        match &self.constraint {
            None => true,
            Some((op, want)) => op.holds(version, want),
        }
    }

    /// Whether this alternative applies on `arch` (its `[...]` list).
    pub fn applies_to(&self, arch: &str) -> bool {
        if self.arch_list.is_empty() {
            return true;
        }
        let negated = self.arch_list.iter().all(|a| a.starts_with('!'));
        if negated {
            !self.arch_list.iter().any(|a| &a[1..] == arch)
        } else {
            self.arch_list.iter().any(|a| a == arch)
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({} {v})", op.as_str())?;
        }
        if !self.arch_list.is_empty() {
            write!(f, " [{}]", self.arch_list.join(" "))?;
        }
        Ok(())
    }
}

/// Alternatives of which one must hold (`a | b`).
pub type Group = Vec<Relation>;

/// Formats a group as Debian writes it (`a (>= 1) | b`).
pub fn group_to_string(group: &[Relation]) -> String {
    group
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Whether `name` is a valid Debian package name (Policy §5.6.1).
pub fn valid_package_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Parses a whole relationship field into AND-ed groups of OR-ed alternatives.
/// An empty (or all-blank) field yields no groups.
pub fn parse_relations(field: &str) -> Result<Vec<Group>, RelationError> {
    if field.trim().is_empty() {
        return Ok(Vec::new());
    }
    field
        .split(',')
        .map(|group| {
            group
                .split('|')
                .map(|alt| parse_one(alt, field))
                .collect::<Result<Group, _>>()
        })
        .collect()
}

fn parse_one(text: &str, field: &str) -> Result<Relation, RelationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(RelationError::Empty {
            field: field.into(),
        });
    }
    let end = s.find(['(', '[', '<', ' ', '\t', '\n']).unwrap_or(s.len());
    let (full_name, mut rest) = s.split_at(end);
    let (name, arch_qualifier) = match full_name.split_once(':') {
        Some((n, q)) => (n, Some(q.to_string())),
        None => (full_name, None),
    };
    if !valid_package_name(name)
        || arch_qualifier
            .as_deref()
            .is_some_and(|q| !valid_package_name(q))
    {
        return Err(RelationError::BadName {
            name: full_name.into(),
            field: field.into(),
        });
    }
    let mut relation = Relation {
        name: name.to_string(),
        arch_qualifier,
        constraint: None,
        arch_list: Vec::new(),
    };
    rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('(') {
        let Some((inner, after)) = after.split_once(')') else {
            return Err(RelationError::Trailing {
                rest: rest.into(),
                field: field.into(),
            });
        };
        relation.constraint = Some(parse_constraint(inner, field)?);
        rest = after.trim_start();
    }
    if let Some(after) = rest.strip_prefix('[') {
        let Some((inner, after)) = after.split_once(']') else {
            return Err(RelationError::Trailing {
                rest: rest.into(),
                field: field.into(),
            });
        };
        relation.arch_list = inner.split_whitespace().map(str::to_string).collect();
        rest = after.trim_start();
    }
    // Build profiles `<!nocheck> <stage1>`: irrelevant for binary packages.
    while let Some(after) = rest.strip_prefix('<') {
        let Some((_, after)) = after.split_once('>') else {
            return Err(RelationError::Trailing {
                rest: rest.into(),
                field: field.into(),
            });
        };
        rest = after.trim_start();
    }
    if !rest.is_empty() {
        return Err(RelationError::Trailing {
            rest: rest.into(),
            field: field.into(),
        });
    }
    Ok(relation)
}

fn parse_constraint(inner: &str, field: &str) -> Result<(Op, Version), RelationError> {
    let bad = || RelationError::BadConstraint {
        constraint: inner.into(),
        field: field.into(),
    };
    let s = inner.trim();
    let op_len = s.find(|c: char| !"<>=".contains(c)).ok_or_else(bad)?;
    let op = match &s[..op_len] {
        "<<" => Op::Lt,
        "<=" | "<" => Op::Le,
        "=" => Op::Eq,
        ">=" | ">" => Op::Ge,
        ">>" => Op::Gt,
        _ => return Err(bad()),
    };
    let version = s[op_len..].trim();
    if version.is_empty() || version.contains(char::is_whitespace) {
        return Err(bad());
    }
    let version = version
        .parse()
        .map_err(|source| RelationError::BadVersion {
            field: field.into(),
            source,
        })?;
    Ok((op, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_groups_alternatives_and_constraints() {
        let groups = parse_relations(
            "libc6 (>= 2.34), default-mta | mail-transport-agent, python3:any (<< 3.12~),\n zlib1g:amd64 (= 1:1.2.13.dfsg-1)",
        )
        .unwrap();
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[0][0].name, "libc6");
        assert_eq!(groups[0][0].constraint, Some((Op::Ge, v("2.34"))));
        assert_eq!(groups[1].len(), 2);
        assert_eq!(groups[1][1].name, "mail-transport-agent");
        assert_eq!(groups[1][1].constraint, None);
        assert_eq!(groups[2][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(groups[2][0].constraint, Some((Op::Lt, v("3.12~"))));
        assert_eq!(
            groups[3][0].constraint,
            Some((Op::Eq, v("1:1.2.13.dfsg-1")))
        );
        assert_eq!(
            group_to_string(&groups[1]),
            "default-mta | mail-transport-agent"
        );
        assert_eq!(groups[2][0].to_string(), "python3:any (<< 3.12~)");
    }

    #[test]
    fn all_operators() {
        let ops = [
            ("<<", Op::Lt),
            ("<=", Op::Le),
            ("=", Op::Eq),
            (">=", Op::Ge),
            (">>", Op::Gt),
            ("<", Op::Le),
            (">", Op::Ge),
        ];
        for (text, op) in ops {
            let g = parse_relations(&format!("a ({text} 1.0)")).unwrap();
            assert_eq!(g[0][0].constraint, Some((op, v("1.0"))), "{text}");
            let g = parse_relations(&format!("a({text}1.0)")).unwrap();
            assert_eq!(g[0][0].constraint, Some((op, v("1.0"))), "no spaces {text}");
        }
        let table = [
            (Op::Lt, "1.0", "2.0", true),
            (Op::Lt, "2.0", "2.0", false),
            (Op::Le, "2.0", "2.0", true),
            (Op::Le, "2.1", "2.0", false),
            (Op::Eq, "2.0", "2.0", true),
            (Op::Eq, "2.0-1", "2.0", false),
            (Op::Ge, "2.0", "2.0", true),
            (Op::Ge, "2.0~rc1", "2.0", false),
            (Op::Gt, "2.0", "2.0", false),
            (Op::Gt, "2.0+b1", "2.0", true),
        ];
        for (op, have, want, expected) in table {
            assert_eq!(
                op.holds(&v(have), &v(want)),
                expected,
                "{have} {op:?} {want}"
            );
        }
    }

    #[test]
    fn arch_lists_and_profiles() {
        let g = parse_relations(
            "a [amd64 arm64] <!nocheck>, b [!amd64], c (>= 1) [i386] <stage1> <cross>",
        )
        .unwrap();
        assert!(g[0][0].applies_to("amd64"));
        assert!(!g[0][0].applies_to("i386"));
        assert!(!g[1][0].applies_to("amd64"));
        assert!(g[1][0].applies_to("i386"));
        assert!(g[2][0].applies_to("i386"));
        assert_eq!(g[2][0].constraint, Some((Op::Ge, v("1"))));
    }

    #[test]
    fn empty_field_is_no_groups() {
        assert!(parse_relations("").unwrap().is_empty());
        assert!(parse_relations(" \n ").unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            "a,,b",
            "a | ",
            "A",
            "a (>= )",
            "a (~ 1.0)",
            "a (>= 1.0",
            "a (>= 1 0)",
            "a [amd64",
            "a (>= x1)",
            "a b",
            "a:",
            "a <stage1",
        ];
        for case in cases {
            assert!(parse_relations(case).is_err(), "{case:?} should fail");
        }
        assert!(matches!(
            parse_relations("a,,b"),
            Err(RelationError::Empty { .. })
        ));
        assert!(matches!(
            parse_relations("Foo"),
            Err(RelationError::BadName { .. })
        ));
        assert!(matches!(
            parse_relations("a (>= x1)"),
            Err(RelationError::BadVersion { .. })
        ));
    }

    #[test]
    fn valid_names() {
        for ok in [
            "a",
            "libc6",
            "g++",
            "libstdc++6",
            "0ad",
            "python3.11",
            "x-y.z+w",
        ] {
            assert!(valid_package_name(ok), "{ok}");
        }
        for bad in ["", "-a", "+a", "A", "a_b", "a b", "a:b"] {
            assert!(!valid_package_name(bad), "{bad}");
        }
    }
}
