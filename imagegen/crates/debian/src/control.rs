//! Deb822 control data: the `Packages`, `Release` and `DEBIAN/control` format.
//!
//! A file is a sequence of paragraphs separated by blank lines; a paragraph
//! is `Field: value` lines, where lines starting with a space or tab continue
//! the previous field (Debian Policy §5.1). Comment lines (`#`) are allowed
//! in sources files and skipped. A PGP armor around the text is not handled
//! here: [`crate::signature`] strips and verifies it first.
//!
//! Hand-written because we need line numbers in error messages and a
//! zero-copy parse of 60 MB indices; the deb822 crates either build a lossless
//! syntax tree (too slow and large for whole archive indices) or drop
//! position information.

/// A syntax error in deb822 text, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ControlError {
    /// 1-based line number of the offending line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One paragraph (stanza): fields in file order, values with continuation
/// lines joined by `\n` and the leading space of each continuation removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Paragraph {
    /// 1-based line number of the paragraph's first field.
    pub line: usize,
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of `name` (field names are case-insensitive), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All fields in file order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Parses deb822 text into paragraphs.
///
/// Errors: a continuation line before any field, a line without `:`, an
/// empty or malformed field name, or a field repeated in one paragraph.
pub fn parse(text: &str) -> Result<Vec<Paragraph>, ControlError> {
    paragraphs(text).collect()
}

/// Parses deb822 text lazily, one paragraph at a time (whole archive
/// indices are ~60 MB: collecting every paragraph first would triple peak
/// memory). Stops after the first error.
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        lines: text.lines().enumerate(),
        failed: false,
    }
}

/// Iterator returned by [`paragraphs`].
#[derive(Debug)]
pub struct Paragraphs<'a> {
    lines: std::iter::Enumerate<std::str::Lines<'a>>,
    failed: bool,
}

impl Iterator for Paragraphs<'_> {
    type Item = Result<Paragraph, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = self.next_paragraph();
        if matches!(result, Some(Err(_))) {
            self.failed = true;
        }
        result
    }
}

impl Paragraphs<'_> {
    fn next_paragraph(&mut self) -> Option<Result<Paragraph, ControlError>> {
        let mut cur = Paragraph::default();
        for (idx, raw) in self.lines.by_ref() {
            let line_no = idx + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                if !cur.fields.is_empty() {
                    return Some(Ok(cur));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                let Some((_, value)) = cur.fields.last_mut() else {
                    return Some(Err(ControlError {
                        line: line_no,
                        message: "continuation line without a field before it".into(),
                    }));
                };
                let cont = &line[1..];
                value.push('\n');
                // A lone "." stands for an empty line in multi-line values.
                value.push_str(if cont.trim_end() == "." { "" } else { cont });
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Some(Err(ControlError {
                    line: line_no,
                    message: format!("expected `Field: value`, found {:?}", truncate(line)),
                }));
            };
            if name.is_empty()
                || name.starts_with('-')
                || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            {
                return Some(Err(ControlError {
                    line: line_no,
                    message: format!("invalid field name {:?}", truncate(name)),
                }));
            }
            if cur.get(name).is_some() {
                return Some(Err(ControlError {
                    line: line_no,
                    message: format!("field {name:?} repeated in one paragraph"),
                }));
            }
            if cur.fields.is_empty() {
                cur.line = line_no;
            }
            cur.fields
                .push((name.to_string(), value.trim().to_string()));
        }
        (!cur.fields.is_empty()).then_some(Ok(cur))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_and_continuations() {
        let text = "Package: a\nVersion: 1.0\nDescription: short\n long line\n .\n more\n\n\n# comment\nPackage: b\r\nDepends: x,\n\ty\n";
        let ps = parse(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].line, 1);
        assert_eq!(ps[0].get("package"), Some("a"));
        assert_eq!(ps[0].get("Description"), Some("short\nlong line\n\nmore"));
        assert_eq!(ps[1].line, 10);
        assert_eq!(ps[1].get("Package"), Some("b"));
        assert_eq!(ps[1].get("Depends"), Some("x,\ny"));
        assert_eq!(ps[1].get("Missing"), None);
        let names: Vec<&str> = ps[0].fields().map(|(k, _)| k).collect();
        assert_eq!(names, ["Package", "Version", "Description"]);
    }

    #[test]
    fn lazy_iterator_stops_after_an_error() {
        let mut it = paragraphs("A: 1\n\nbad\n\nB: 2\n");
        assert_eq!(it.next().unwrap().unwrap().get("A"), Some("1"));
        assert_eq!(it.next().unwrap().unwrap_err().line, 3);
        assert!(it.next().is_none());
    }

    #[test]
    fn empty_input_has_no_paragraphs() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n\n  \n").unwrap().is_empty());
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases = [
            (" leading continuation\n", 1, "continuation"),
            ("Package: a\nno colon here\n", 2, "expected `Field: value`"),
            ("Package: a\n\n: value\n", 3, "invalid field name"),
            ("Package: a\nBad Name: x\n", 2, "invalid field name"),
            ("Package: a\nVersion: 1\npackage: b\n", 3, "repeated"),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("line {line}: ")));
        }
    }
}
