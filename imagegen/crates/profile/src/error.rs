//! Profile errors, and where in a file they are: every error names the
//! file, the line and the dotted key at fault ([`Location`]); the key's
//! line and column come from toml_edit's spans ([`locate_key`]).

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Where in a profile something is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The profile file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted key path, when known (for example `kernel.modules`).
    pub key: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        Ok(())
    }
}

/// Errors from reading, parsing, merging or validating a profile.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// The profile file given cannot be used: missing, unreadable, not a
    /// regular file, larger than [`MAX_PROFILE_BYTES`](crate::MAX_PROFILE_BYTES) or not UTF-8.
    #[error("cannot read profile {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (the I/O error's text, or the rule broken).
        reason: String,
    },
    /// The text is not valid TOML.
    #[error("{location}: TOML syntax error: {message}")]
    Syntax {
        /// Where.
        location: Location,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown or has the wrong type.
    #[error("{location}: {message}")]
    Schema {
        /// Where.
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// A value has the right type but is not allowed.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// What is wrong and what would be right.
        message: String,
    },
    /// An `extends` cannot be followed: its target is missing, unreadable,
    /// not a regular file, too large or not UTF-8, or the chain loops or
    /// holds more than [`MAX_EXTENDS_DEPTH`](crate::MAX_EXTENDS_DEPTH) files.
    #[error("{location}: {reason}")]
    Extends {
        /// The `extends` line of the file that names the target.
        location: Location,
        /// What is wrong, naming the target or the chain.
        reason: String,
    },
    /// [`Profile::from_chain`](crate::Profile::from_chain) was given no file.
    #[error("no profile file to read")]
    EmptyChain,
}

/// Converts a byte offset into 1-based (line, column).
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Finds the line and column of a dotted key in TOML text (the key itself,
/// or the `[table]` header for a table), using toml_edit's spans.
pub fn locate_key(text: &str, key: &[&str]) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    for (i, part) in key.iter().enumerate() {
        let (k, item) = table.get_key_value(part)?;
        span = k.span().or_else(|| item.span());
        if i + 1 < key.len() {
            table = item.as_table_like()?;
        }
    }
    span.map(|s| line_col(text, s.start))
}
