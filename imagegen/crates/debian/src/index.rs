//! Binary package indices (`Packages` files): one [`Package`] per stanza,
//! looked up by name or by what they provide.

use std::collections::BTreeMap;

use crate::control::{self, ControlError};
use crate::relation::{parse_relations, Group, Relation, RelationError};
use crate::version::{Version, VersionError};

/// A `Packages` file that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Deb822 syntax error.
    #[error("{source_name}: {source}")]
    Syntax {
        /// Where the text came from (file or URL).
        source_name: String,
        /// The syntax error, with its line.
        source: ControlError,
    },
    /// A required field is missing from a stanza.
    #[error("{source_name}: line {line}: stanza {package:?} lacks field {field}")]
    MissingField {
        /// Where the text came from.
        source_name: String,
        /// Line of the stanza.
        line: usize,
        /// Package name (empty when `Package` itself is missing).
        package: String,
        /// The missing field.
        field: &'static str,
    },
    /// A field has an invalid value.
    #[error("{source_name}: line {line}: package {package:?}: field {field}: {message}")]
    BadField {
        /// Where the text came from.
        source_name: String,
        /// Line of the stanza.
        line: usize,
        /// Package name.
        package: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// One binary package as listed in a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: Version,
    /// `Architecture` (`amd64`, `all`...).
    pub architecture: String,
    /// `Filename`: path of the `.deb` below the archive root.
    pub filename: String,
    /// `Size` in bytes.
    pub size: u64,
    /// `SHA256` of the `.deb`, lowercase hex.
    pub sha256: String,
    /// `Depends`.
    pub depends: Vec<Group>,
    /// `Pre-Depends`.
    pub pre_depends: Vec<Group>,
    /// `Provides` (each a name with an optional `= version`).
    pub provides: Vec<Relation>,
    /// `Conflicts`.
    pub conflicts: Vec<Group>,
    /// `Breaks`.
    pub breaks: Vec<Group>,
    /// `Essential: yes`.
    pub essential: bool,
    /// `Priority` (`required`, `important`, `standard`, `optional`, `extra`).
    pub priority: Option<String>,
    /// First line of `Description`.
    pub description: Option<String>,
}

impl Package {
    /// Builds a package from one stanza; `source_name` names the file in errors.
    pub fn from_paragraph(p: &control::Paragraph, source_name: &str) -> Result<Self, IndexError> {
        let name = p.get("Package").unwrap_or_default().to_string();
        let missing = |field: &'static str| IndexError::MissingField {
            source_name: source_name.into(),
            line: p.line,
            package: name.clone(),
            field,
        };
        let bad = |field: &'static str, message: String| IndexError::BadField {
            source_name: source_name.into(),
            line: p.line,
            package: name.clone(),
            field,
            message,
        };
        if name.is_empty() {
            return Err(missing("Package"));
        }
        if !crate::relation::valid_package_name(&name) {
            return Err(bad("Package", "invalid package name".into()));
        }
        let version: Version = p
            .get("Version")
            .ok_or_else(|| missing("Version"))?
            .parse()
            .map_err(|e: VersionError| bad("Version", e.to_string()))?;
        let architecture = p
            .get("Architecture")
            .ok_or_else(|| missing("Architecture"))?;
        let filename = p.get("Filename").ok_or_else(|| missing("Filename"))?;
        if filename.is_empty()
            || filename.starts_with('/')
            || filename.split('/').any(|c| c == "..")
        {
            return Err(bad("Filename", format!("unsafe path {filename:?}")));
        }
        let size = p
            .get("Size")
            .ok_or_else(|| missing("Size"))?
            .parse::<u64>()
            .map_err(|e| bad("Size", e.to_string()))?;
        let sha256 = p
            .get("SHA256")
            .ok_or_else(|| missing("SHA256"))?
            .to_ascii_lowercase();
        if !is_sha256_hex(&sha256) {
            return Err(bad(
                "SHA256",
                format!("not a SHA-256 hex digest: {sha256:?}"),
            ));
        }
        let rel = |field: &'static str| -> Result<Vec<Group>, IndexError> {
            parse_relations(p.get(field).unwrap_or_default())
                .map_err(|e: RelationError| bad(field, e.to_string()))
        };
        let provides = rel("Provides")?;
        if provides.iter().any(|g| g.len() != 1) {
            return Err(bad("Provides", "alternatives are not allowed".into()));
        }
        Ok(Package {
            version,
            architecture: architecture.to_string(),
            filename: filename.to_string(),
            size,
            sha256,
            depends: rel("Depends")?,
            pre_depends: rel("Pre-Depends")?,
            provides: provides.into_iter().flatten().collect(),
            conflicts: rel("Conflicts")?,
            breaks: rel("Breaks")?,
            essential: p
                .get("Essential")
                .is_some_and(|e| e.eq_ignore_ascii_case("yes")),
            priority: p.get("Priority").map(str::to_string),
            description: p
                .get("Description")
                .and_then(|d| d.lines().next())
                .map(str::to_string),
            name,
        })
    }
}

/// Whether `s` is 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// All packages of one architecture (plus `all`), indexed by name and by
/// provided virtual name.
#[derive(Debug, Clone, Default)]
pub struct PackageIndex {
    architecture: String,
    /// name -> versions, highest first.
    by_name: BTreeMap<String, Vec<Package>>,
    /// virtual name -> (provider name, index into its `by_name` versions).
    providers: BTreeMap<String, Vec<(String, usize)>>,
}

impl PackageIndex {
    /// An empty index for `architecture`.
    pub fn new(architecture: &str) -> Self {
        PackageIndex {
            architecture: architecture.to_string(),
            ..Default::default()
        }
    }

    /// Parses a `Packages` file and returns an index of its packages.
    pub fn parse(text: &str, architecture: &str, source_name: &str) -> Result<Self, IndexError> {
        let mut index = Self::new(architecture);
        index.add_text(text, source_name)?;
        Ok(index)
    }

    /// Adds the packages of another `Packages` file (another component).
    pub fn add_text(&mut self, text: &str, source_name: &str) -> Result<(), IndexError> {
        // Parse first, then commit: a malformed file leaves the index as it was.
        let mut parsed = Vec::new();
        for p in control::paragraphs(text) {
            let p = p.map_err(|source| IndexError::Syntax {
                source_name: source_name.into(),
                source,
            })?;
            parsed.push(Package::from_paragraph(&p, source_name)?);
        }
        for package in parsed {
            self.insert(package);
        }
        self.rebuild();
        Ok(())
    }

    /// Adds one package. Packages of other architectures than the index's
    /// (and `all`) are ignored, as are exact duplicates.
    pub fn add(&mut self, package: Package) {
        self.insert(package);
        self.rebuild();
    }

    fn insert(&mut self, package: Package) {
        if package.architecture != self.architecture && package.architecture != "all" {
            return;
        }
        let versions = self.by_name.entry(package.name.clone()).or_default();
        if !versions
            .iter()
            .any(|p| p.version == package.version && p.architecture == package.architecture)
        {
            versions.push(package);
        }
    }

    /// Sorts versions (highest first) and recomputes the providers map.
    fn rebuild(&mut self) {
        self.providers.clear();
        for (name, versions) in &mut self.by_name {
            versions.sort_by(|a, b| b.version.cmp(&a.version));
            for (i, p) in versions.iter().enumerate() {
                for prov in &p.provides {
                    self.providers
                        .entry(prov.name.clone())
                        .or_default()
                        .push((name.clone(), i));
                }
            }
        }
    }

    /// The index's architecture.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Versions of a real package, highest first (empty if none).
    pub fn versions(&self, name: &str) -> &[Package] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The highest version of a real package.
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.versions(name).first()
    }

    /// Packages that list `name` in `Provides`.
    pub fn providers(&self, name: &str) -> impl Iterator<Item = &Package> {
        self.providers
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(n, i)| self.by_name.get(n).and_then(|v| v.get(*i)))
    }

    /// All real package names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Number of distinct real package names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the index has no packages.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn stanza(name: &str, version: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/main/{name}_{version}_amd64.deb\nSize: 100\nSHA256: {}\nDescription: the {name} package\n more text\n{extra}",
            "ab".repeat(32)
        )
    }

    #[test]
    fn parses_fields() {
        let text = stanza(
            "foo",
            "1:2.0-1",
            "Depends: libc6 (>= 2.34), bar | baz\nPre-Depends: dpkg\nProvides: foo-virt (= 2.0), other\nConflicts: old\nBreaks: older (<< 1)\nEssential: yes\nPriority: required\n",
        );
        let idx = PackageIndex::parse(&text, "amd64", "test").unwrap();
        let p = idx.get("foo").unwrap();
        assert_eq!(p.version.to_string(), "1:2.0-1");
        assert_eq!(p.size, 100);
        assert_eq!(p.depends.len(), 2);
        assert_eq!(p.pre_depends[0][0].name, "dpkg");
        assert_eq!(p.provides.len(), 2);
        assert_eq!(p.conflicts[0][0].name, "old");
        assert_eq!(p.breaks[0][0].name, "older");
        assert!(p.essential);
        assert_eq!(p.priority.as_deref(), Some("required"));
        assert_eq!(p.description.as_deref(), Some("the foo package"));
        assert_eq!(idx.providers("foo-virt").next().unwrap().name, "foo");
        assert_eq!(idx.providers("other").count(), 1);
        assert_eq!(idx.providers("none").count(), 0);
    }

    #[test]
    fn keeps_versions_sorted_and_filters_architecture() {
        let text = format!(
            "{}\n{}\n{}\n",
            stanza("a", "1.0", "Provides: v\n"),
            stanza("a", "2.0", "Provides: v\n"),
            stanza("b", "1.0", "").replace("amd64\n", "arm64\n")
        );
        let idx = PackageIndex::parse(&text, "amd64", "test").unwrap();
        let vs: Vec<String> = idx
            .versions("a")
            .iter()
            .map(|p| p.version.to_string())
            .collect();
        assert_eq!(vs, ["2.0", "1.0"]);
        assert!(idx.get("b").is_none(), "arm64 package filtered out");
        let provs: Vec<String> = idx.providers("v").map(|p| p.version.to_string()).collect();
        assert_eq!(provs.len(), 2);
        assert!(provs.contains(&"2.0".to_string()) && provs.contains(&"1.0".to_string()));
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let good = stanza("a", "1.0", "");
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{good}\n\nPackage: b\nVersion: 1\n"),
                "test: line 11: stanza \"b\" lacks field Architecture",
            ),
            (good.replace("Version: 1.0", "Version: x"), "field Version"),
            (good.replace("Size: 100", "Size: big"), "field Size"),
            (good.replace(&"ab".repeat(32), "zz"), "field SHA256"),
            (format!("{good}Depends: a (>= \n"), "field Depends"),
            (format!("{good}Provides: a | b\n"), "field Provides"),
            (good.replace("pool/main", "../etc"), "field Filename"),
            (format!("{good}\nbroken\n"), "test: line 10: expected"),
        ];
        for (text, needle) in cases {
            let err = PackageIndex::parse(&text, "amd64", "test")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }
}
