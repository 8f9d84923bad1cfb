//! Dependency resolution over a [`PackageIndex`]: pure, deterministic.
//!
//! Starting from the requested packages (highest version, or `name=version`),
//! follow `Pre-Depends` and `Depends` breadth-first. For each group of
//! alternatives (`a | b`): if a chosen package already satisfies one of them
//! (by name and version, or by a matching `Provides`) nothing is added; else
//! the first alternative with an installable candidate is taken (real
//! package, highest satisfying version; else a provider, preferring higher
//! `Priority`, then name). Versioned dependencies are only satisfied by
//! versioned `Provides` (Policy §7.5). `:any`/`:native` qualifiers are
//! accepted; another architecture's qualifier never matches.
//!
//! `Essential: yes` packages are not added implicitly. Packages in the
//! exclude list are never chosen; a group that only excluded packages could
//! satisfy counts as satisfied and is reported in
//! [`Resolution::skipped_deps`]. Afterwards `Conflicts` and `Breaks` between
//! chosen packages are checked. All problems are reported together, each
//! with the chain of packages that led to it.
//!
//! No backtracking: if the first choice conflicts, the conflict is reported
//! (and can be fixed by requesting the other alternative explicitly).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::index::{Package, PackageIndex};
use crate::relation::{group_to_string, Relation};
use crate::version::Version;

/// Why resolution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A requested name is neither a package nor provided by one.
    #[error("unknown package {name:?}{}", suggest(suggestions))]
    UnknownPackage {
        /// The requested name.
        name: String,
        /// Nearest existing package names.
        suggestions: Vec<String>,
    },
    /// A requested `name=version` does not exist.
    #[error("package {name:?} has no version {version}; available: {}", available.join(", "))]
    UnknownVersion {
        /// The package.
        name: String,
        /// The requested version.
        version: String,
        /// Versions in the index.
        available: Vec<String>,
    },
    /// A request is malformed (bad name or version).
    #[error("invalid package request {request:?}: {reason}")]
    BadRequest {
        /// The request text.
        request: String,
        /// What is wrong.
        reason: String,
    },
    /// A package is both requested and excluded.
    #[error("package {name:?} is both requested and excluded")]
    RequestedAndExcluded {
        /// The package.
        name: String,
    },
    /// Missing dependencies or conflicts; all of them are listed.
    #[error("cannot resolve the package set:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Unsatisfiable {
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}?", s.join(", "))
    }
}

/// One reason the package set is not installable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No package satisfies a dependency.
    Missing {
        /// `name version` of the package with the dependency.
        package: String,
        /// The dependency group as written.
        dependency: String,
        /// Request → … → package that needed it.
        chain: Vec<String>,
        /// Already chosen packages of a named alternative whose version does
        /// not match (`name version`), e.g. chosen earlier for another
        /// dependant.
        chosen_mismatch: Vec<String>,
    },
    /// Two chosen packages conflict (`Conflicts` or `Breaks`).
    Conflict {
        /// Package declaring the relation.
        package: String,
        /// `Conflicts` or `Breaks`.
        field: &'static str,
        /// The relation as written.
        relation: String,
        /// The chosen package that matches it.
        other: String,
        /// Why `package` was chosen.
        chain: Vec<String>,
        /// Why `other` was chosen.
        other_chain: Vec<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing {
                package,
                dependency,
                chain,
                chosen_mismatch,
            } => {
                if chosen_mismatch.is_empty() {
                    write!(
                        f,
                        "{package} depends on {dependency}, which no package satisfies"
                    )?;
                } else {
                    write!(
                        f,
                        "{package} depends on {dependency}, but {} was already chosen",
                        chosen_mismatch.join(", ")
                    )?;
                }
                write!(f, " (needed by {})", chain.join(" -> "))
            }
            Problem::Conflict {
                package,
                field,
                relation,
                other,
                chain,
                other_chain,
            } => write!(
                f,
                "{package} {field}: {relation}, but {other} is also chosen ({} / {})",
                chain.join(" -> "),
                other_chain.join(" -> ")
            ),
        }
    }
}

/// A dependency treated as satisfied because only excluded packages could
/// satisfy it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkippedDep {
    /// The package with the dependency.
    pub package: String,
    /// The dependency group as written.
    pub dependency: String,
    /// The excluded packages that would have satisfied it.
    pub excluded: Vec<String>,
}

/// The chosen package set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Chosen packages, sorted by name.
    pub packages: Vec<Package>,
    /// Dependencies left out because of the exclude list, sorted.
    pub skipped_deps: Vec<SkippedDep>,
    /// For each chosen package, the package that pulled it in (`None` for
    /// requested ones).
    pub pulled_by: BTreeMap<String, Option<String>>,
}

impl Resolution {
    /// The request → … → `name` chain for a chosen package.
    pub fn chain(&self, name: &str) -> Vec<String> {
        chain_of(&self.pulled_by, name)
    }
}

fn chain_of(pulled_by: &BTreeMap<String, Option<String>>, name: &str) -> Vec<String> {
    let mut chain = vec![name.to_string()];
    let mut cur = name;
    while let Some(Some(parent)) = pulled_by.get(cur) {
        if chain.iter().any(|c| c == parent) {
            break; // cannot happen (each package is chosen once), but never loop
        }
        chain.push(parent.clone());
        cur = parent;
    }
    chain.reverse();
    chain
}

/// Resolves `request` (names or `name=version`) against `index`, never
/// choosing a package named in `exclude`.
pub fn resolve(
    index: &PackageIndex,
    request: &[String],
    exclude: &[String],
) -> Result<Resolution, ResolveError> {
    Resolver {
        index,
        exclude: exclude.iter().map(String::as_str).collect(),
        chosen: BTreeMap::new(),
        pulled_by: BTreeMap::new(),
        queue: VecDeque::new(),
    }
    .run(request)
}

struct Resolver<'a> {
    index: &'a PackageIndex,
    exclude: BTreeSet<&'a str>,
    chosen: BTreeMap<String, &'a Package>,
    pulled_by: BTreeMap<String, Option<String>>,
    queue: VecDeque<String>,
}

fn priority_rank(p: &Package) -> u8 {
    match p.priority.as_deref() {
        Some("required") => 0,
        Some("important") => 1,
        Some("standard") => 2,
        Some("optional") => 3,
        Some("extra") => 4,
        _ => 5,
    }
}

impl<'a> Resolver<'a> {
    fn run(mut self, request: &[String]) -> Result<Resolution, ResolveError> {
        let requests: BTreeSet<&str> = request.iter().map(|s| s.trim()).collect();
        for req in requests {
            let pkg = self.requested(req)?;
            self.choose(pkg, None);
        }
        let mut problems = Vec::new();
        let mut skipped = BTreeSet::new();
        while let Some(name) = self.queue.pop_front() {
            let pkg = self.chosen[&name];
            for group in pkg.pre_depends.iter().chain(&pkg.depends) {
                let alts: Vec<&Relation> = group
                    .iter()
                    .filter(|r| r.applies_to(self.index.architecture()))
                    .collect();
                if alts.is_empty() || alts.iter().any(|r| self.satisfied(r)) {
                    continue;
                }
                let mut excluded = BTreeSet::new();
                let mut picked = None;
                'alts: for r in &alts {
                    if self.exclude.contains(r.name.as_str()) {
                        excluded.insert(r.name.clone());
                    }
                    for cand in self.candidates(r) {
                        if self.exclude.contains(cand.name.as_str()) {
                            excluded.insert(cand.name.clone());
                        } else if !self.chosen.contains_key(&cand.name) {
                            picked = Some(cand);
                            break 'alts;
                        }
                    }
                }
                if let Some(cand) = picked {
                    self.choose(cand, Some(name.clone()));
                } else if !excluded.is_empty() {
                    skipped.insert(SkippedDep {
                        package: name.clone(),
                        dependency: group_to_string(group),
                        excluded: excluded.into_iter().collect(),
                    });
                } else {
                    let chosen_mismatch = alts
                        .iter()
                        .filter_map(|r| self.chosen.get(&r.name))
                        .map(|p| format!("{} {}", p.name, p.version))
                        .collect();
                    problems.push(Problem::Missing {
                        package: format!("{} {}", pkg.name, pkg.version),
                        dependency: group_to_string(group),
                        chain: chain_of(&self.pulled_by, &name),
                        chosen_mismatch,
                    });
                }
            }
        }
        problems.extend(self.conflicts());
        if !problems.is_empty() {
            return Err(ResolveError::Unsatisfiable { problems });
        }
        Ok(Resolution {
            packages: self.chosen.values().map(|p| (*p).clone()).collect(),
            skipped_deps: skipped.into_iter().collect(),
            pulled_by: self.pulled_by,
        })
    }

    /// The package for one request: `name` or `name=version`; a virtual
    /// name resolves to its best provider.
    fn requested(&self, req: &str) -> Result<&'a Package, ResolveError> {
        let (name, version) = match req.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (req, None),
        };
        if !crate::relation::valid_package_name(name) {
            return Err(ResolveError::BadRequest {
                request: req.into(),
                reason: "not a valid Debian package name".into(),
            });
        }
        if self.exclude.contains(name) {
            return Err(ResolveError::RequestedAndExcluded { name: name.into() });
        }
        let versions = self.index.versions(name);
        if let Some(v) = version {
            let want: Version =
                v.parse()
                    .map_err(|e: crate::version::VersionError| ResolveError::BadRequest {
                        request: req.into(),
                        reason: e.to_string(),
                    })?;
            return versions.iter().find(|p| p.version == want).ok_or_else(|| {
                ResolveError::UnknownVersion {
                    name: name.into(),
                    version: v.into(),
                    available: versions.iter().map(|p| p.version.to_string()).collect(),
                }
            });
        }
        if let Some(p) = versions.first() {
            return Ok(p);
        }
        let rel = Relation {
            name: name.into(),
            arch_qualifier: None,
            constraint: None,
            arch_list: Vec::new(),
        };
        self.candidates(&rel)
            .into_iter()
            .find(|p| !self.exclude.contains(p.name.as_str()))
            .ok_or_else(|| ResolveError::UnknownPackage {
                name: name.into(),
                suggestions: nearest_names(self.index, name),
            })
    }

    fn choose(&mut self, pkg: &'a Package, parent: Option<String>) {
        if self.chosen.contains_key(&pkg.name) {
            return;
        }
        tracing::trace!(package = %pkg.name, version = %pkg.version, ?parent, "chosen");
        self.chosen.insert(pkg.name.clone(), pkg);
        self.pulled_by.insert(pkg.name.clone(), parent);
        self.queue.push_back(pkg.name.clone());
    }

    fn arch_ok(&self, r: &Relation) -> bool {
        match r.arch_qualifier.as_deref() {
            None | Some("any") | Some("native") => true,
            Some(a) => a == self.index.architecture(),
        }
    }

    /// Whether `prov` (a Provides entry) satisfies `r`.
    fn provide_matches(r: &Relation, prov: &Relation) -> bool {
        prov.name == r.name
            && match (&r.constraint, &prov.constraint) {
                (None, _) => true,
                (Some(_), Some((_, pv))) => r.version_matches(pv),
                (Some(_), None) => false,
            }
    }

    /// Whether a chosen package satisfies `r`.
    fn satisfied(&self, r: &Relation) -> bool {
        if !self.arch_ok(r) {
            return false;
        }
        if self
            .chosen
            .get(&r.name)
            .is_some_and(|p| r.version_matches(&p.version))
        {
            return true;
        }
        self.index.providers(&r.name).any(|p| {
            self.chosen
                .get(&p.name)
                .is_some_and(|c| std::ptr::eq(*c, p))
                && p.provides.iter().any(|prov| Self::provide_matches(r, prov))
        })
    }

    /// Installable candidates for `r`, best first: real versions (highest
    /// first), then providers by priority, name and version.
    fn candidates(&self, r: &Relation) -> Vec<&'a Package> {
        if !self.arch_ok(r) {
            return Vec::new();
        }
        let mut out: Vec<&'a Package> = self
            .index
            .versions(&r.name)
            .iter()
            .filter(|p| r.version_matches(&p.version))
            .collect();
        let mut providers: Vec<&'a Package> = self
            .index
            .providers(&r.name)
            .filter(|p| p.provides.iter().any(|prov| Self::provide_matches(r, prov)))
            .collect();
        providers.sort_by(|a, b| {
            priority_rank(a)
                .cmp(&priority_rank(b))
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| b.version.cmp(&a.version))
        });
        providers.dedup_by(|a, b| std::ptr::eq(*a, *b));
        out.extend(providers);
        out
    }

    /// Every `Conflicts`/`Breaks` relation that matches another chosen package.
    fn conflicts(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for pkg in self.chosen.values() {
            for (field, groups) in [("Conflicts", &pkg.conflicts), ("Breaks", &pkg.breaks)] {
                for r in groups.iter().flatten() {
                    if !r.applies_to(self.index.architecture()) || !self.arch_ok(r) {
                        continue;
                    }
                    let mut hits: BTreeSet<&str> = BTreeSet::new();
                    if let Some(other) = self.chosen.get(&r.name) {
                        if other.name != pkg.name && r.version_matches(&other.version) {
                            hits.insert(&other.name);
                        }
                    }
                    for p in self.index.providers(&r.name) {
                        let chosen_same = self
                            .chosen
                            .get(&p.name)
                            .is_some_and(|c| std::ptr::eq(*c, p));
                        if chosen_same
                            && p.name != pkg.name
                            && p.provides.iter().any(|prov| Self::provide_matches(r, prov))
                        {
                            hits.insert(&p.name);
                        }
                    }
                    for other in hits {
                        out.push(Problem::Conflict {
                            package: format!("{} {}", pkg.name, pkg.version),
                            field,
                            relation: r.to_string(),
                            other: format!("{other} {}", self.chosen[other].version),
                            chain: chain_of(&self.pulled_by, &pkg.name),
                            other_chain: chain_of(&self.pulled_by, other),
                        });
                    }
                }
            }
        }
        out
    }
}

/// Up to five package names nearest to `name` (edit distance ≤ 2, or
/// containing it), closest first.
pub fn nearest_names(index: &PackageIndex, name: &str) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = index
        .names()
        .filter_map(|n| {
            let d = strsim::levenshtein(n, name);
            if d <= 2 {
                Some((d, n))
            } else if n.contains(name) {
                Some((3 + n.len() - name.len(), n))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(5)
        .map(|(_, n)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an index from compact lines: `name version [Field: value]...`
    /// separated by ` ; `.
    fn index(spec: &[&str]) -> PackageIndex {
        let mut text = String::new();
        for line in spec {
            let mut parts = line.split(" ; ");
            let head = parts.next().unwrap();
            let (name, version) = head.split_once(' ').unwrap();
            text.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/{name}_{version}.deb\nSize: 1\nSHA256: {}\n",
                "0".repeat(64)
            ));
            for field in parts {
                text.push_str(field);
                text.push('\n');
            }
            text.push('\n');
        }
        PackageIndex::parse(&text, "amd64", "fixture").unwrap()
    }

    fn req(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn names(r: &Resolution) -> Vec<String> {
        r.packages
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    }

    #[test]
    fn follows_depends_and_pre_depends_transitively() {
        let idx = index(&[
            "app 1.0 ; Depends: liba (>= 1.0) ; Pre-Depends: init",
            "liba 1.5 ; Depends: libc",
            "libc 2.36",
            "init 1",
            "unrelated 1",
            "ess 1 ; Essential: yes",
        ]);
        let r = resolve(&idx, &req(&["app"]), &[]).unwrap();
        assert_eq!(names(&r), ["app=1.0", "init=1", "liba=1.5", "libc=2.36"]);
        assert_eq!(r.chain("libc"), ["app", "liba", "libc"]);
        assert_eq!(r.pulled_by["app"], None);
        assert!(r.skipped_deps.is_empty());
    }

    #[test]
    fn versioned_constraints_pick_a_satisfying_version() {
        let idx = index(&[
            "app 1 ; Depends: lib (<< 2.0)",
            "lib 1.0",
            "lib 1.9",
            "lib 2.0",
            "new 1 ; Depends: lib (>> 2.0)",
            "exact 1 ; Depends: lib (= 1.0)",
        ]);
        let r = resolve(&idx, &req(&["app"]), &[]).unwrap();
        assert_eq!(names(&r), ["app=1", "lib=1.9"]);
        let r = resolve(&idx, &req(&["exact"]), &[]).unwrap();
        assert_eq!(names(&r), ["exact=1", "lib=1.0"]);
        // A requested version that is too new for a dependant is a problem.
        let err = resolve(&idx, &req(&["new"]), &[]).unwrap_err();
        let ResolveError::Unsatisfiable { problems } = err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            [Problem::Missing {
                package: "new 1".into(),
                dependency: "lib (>> 2.0)".into(),
                chain: vec!["new".into()],
                chosen_mismatch: vec![],
            }]
        );
        // Explicit version requests.
        let r = resolve(&idx, &req(&["lib=1.0"]), &[]).unwrap();
        assert_eq!(names(&r), ["lib=1.0"]);
        let err = resolve(&idx, &req(&["lib=3"]), &[]).unwrap_err();
        assert!(matches!(err, ResolveError::UnknownVersion { .. }), "{err}");
        assert!(err.to_string().contains("2.0, 1.9, 1.0"), "{err}");
    }

    #[test]
    fn chosen_version_not_matching_later_constraint_is_reported() {
        let idx = index(&[
            "a 1 ; Depends: lib",
            "b 1 ; Depends: lib (<< 2)",
            "lib 1",
            "lib 2",
        ]);
        let err = resolve(&idx, &req(&["a", "b"]), &[]).unwrap_err();
        assert!(
            err.to_string().contains("b 1 depends on lib (<< 2)"),
            "{err}"
        );
    }

    #[test]
    fn alternatives_prefer_chosen_then_first_satisfiable() {
        let idx = index(&[
            "app 1 ; Depends: mta-a | mta-b, gone | there, old (>= 2) | fallback",
            "mta-a 1",
            "mta-b 1",
            "there 1",
            "old 1",
            "fallback 1",
        ]);
        let r = resolve(&idx, &req(&["app"]), &[]).unwrap();
        assert_eq!(names(&r), ["app=1", "fallback=1", "mta-a=1", "there=1"]);
        // mta-b requested: the alternative already chosen wins.
        let r = resolve(&idx, &req(&["app", "mta-b"]), &[]).unwrap();
        assert_eq!(names(&r), ["app=1", "fallback=1", "mta-b=1", "there=1"]);
    }

    #[test]
    fn virtual_packages_and_versioned_provides() {
        let idx = index(&[
            "app 1 ; Depends: awk, libfoo-abi (>= 2), logger:any",
            "mawk 1 ; Provides: awk ; Priority: required",
            "gawk 1 ; Provides: awk ; Priority: optional",
            "foo-old 1 ; Provides: libfoo-abi (= 1)",
            "foo-new 1 ; Provides: libfoo-abi (= 2)",
            "foo-unversioned 1 ; Provides: libfoo-abi",
            "rsyslog 1 ; Provides: logger",
        ]);
        let r = resolve(&idx, &req(&["app"]), &[]).unwrap();
        assert_eq!(names(&r), ["app=1", "foo-new=1", "mawk=1", "rsyslog=1"]);
        // A chosen provider satisfies the virtual dependency.
        let r = resolve(&idx, &req(&["app", "gawk"]), &[]).unwrap();
        assert_eq!(names(&r), ["app=1", "foo-new=1", "gawk=1", "rsyslog=1"]);
        // Requesting a virtual name picks its best provider.
        let r = resolve(&idx, &req(&["awk"]), &[]).unwrap();
        assert_eq!(names(&r), ["mawk=1"]);
    }

    #[test]
    fn arch_qualifiers() {
        let idx = index(&[
            "app 1 ; Depends: python3:any, lib:amd64",
            "python3 3.11",
            "lib 1",
            "x 1 ; Depends: lib:i386",
        ]);
        let r = resolve(&idx, &req(&["app"]), &[]).unwrap();
        assert_eq!(names(&r), ["app=1", "lib=1", "python3=3.11"]);
        assert!(resolve(&idx, &req(&["x"]), &[]).is_err());
    }

    #[test]
    fn conflicts_and_breaks_are_reported_with_chains() {
        let idx = index(&[
            "top 1 ; Depends: a, b",
            "a 1 ; Depends: c",
            "b 1 ; Conflicts: c",
            "c 1",
            "d 1 ; Breaks: a (<< 2)",
            "e 1 ; Provides: mail ; Conflicts: mail",
            "f 1 ; Provides: mail",
            "g 1 ; Provides: mail ; Conflicts: mail",
        ]);
        let err = resolve(&idx, &req(&["top"]), &[]).unwrap_err();
        let ResolveError::Unsatisfiable { problems } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            &[Problem::Conflict {
                package: "b 1".into(),
                field: "Conflicts",
                relation: "c".into(),
                other: "c 1".into(),
                chain: vec!["top".into(), "b".into()],
                other_chain: vec!["top".into(), "a".into(), "c".into()],
            }]
        );
        let msg = err.to_string();
        assert!(
            msg.contains("b 1 Conflicts: c, but c 1 is also chosen (top -> b / top -> a -> c)"),
            "{msg}"
        );
        let err = resolve(&idx, &req(&["d", "a"]), &[]).unwrap_err();
        assert!(
            err.to_string().contains("d 1 Breaks: a (<< 2), but a 1"),
            "{err}"
        );
        // Provides + Conflicts on the same virtual name excludes only others.
        assert!(resolve(&idx, &req(&["e"]), &[]).is_ok());
        let err = resolve(&idx, &req(&["e", "f"]), &[]).unwrap_err();
        assert!(
            err.to_string().contains("e 1 Conflicts: mail, but f 1"),
            "{err}"
        );
        let err = resolve(&idx, &req(&["e", "g"]), &[]).unwrap_err();
        let ResolveError::Unsatisfiable { problems } = &err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 2, "both directions: {err}");
    }

    #[test]
    fn missing_dependency_names_the_chain_and_all_problems() {
        let idx = index(&[
            "top 1 ; Depends: mid",
            "mid 2 ; Depends: libgone (>= 3) | libalso",
            "other 1 ; Depends: nope",
        ]);
        let err = resolve(&idx, &req(&["top", "other"]), &[]).unwrap_err();
        let ResolveError::Unsatisfiable { problems } = &err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 2);
        let msg = err.to_string();
        assert!(
            msg.contains("mid 2 depends on libgone (>= 3) | libalso, which no package satisfies (needed by top -> mid)"),
            "{msg}"
        );
        assert!(msg.contains("other 1 depends on nope"), "{msg}");
    }

    #[test]
    fn excludes_are_skipped_and_reported() {
        let idx = index(&[
            "app 1 ; Depends: init-system | systemd-sysv, docs, libc",
            "systemd-sysv 1 ; Provides: init-system",
            "docs 1",
            "libc 1",
        ]);
        let ex = req(&["systemd-sysv", "docs"]);
        let r = resolve(&idx, &req(&["app"]), &ex).unwrap();
        assert_eq!(names(&r), ["app=1", "libc=1"]);
        assert_eq!(
            r.skipped_deps,
            [
                SkippedDep {
                    package: "app".into(),
                    dependency: "docs".into(),
                    excluded: vec!["docs".into()],
                },
                SkippedDep {
                    package: "app".into(),
                    dependency: "init-system | systemd-sysv".into(),
                    excluded: vec!["systemd-sysv".into()],
                },
            ]
        );
        let err = resolve(&idx, &req(&["docs"]), &ex).unwrap_err();
        assert_eq!(
            err,
            ResolveError::RequestedAndExcluded {
                name: "docs".into()
            }
        );
    }

    #[test]
    fn excluded_alternative_falls_through_to_next() {
        let idx = index(&["app 1 ; Depends: a | b", "a 1", "b 1"]);
        let r = resolve(&idx, &req(&["app"]), &req(&["a"])).unwrap();
        assert_eq!(names(&r), ["app=1", "b=1"]);
        assert!(r.skipped_deps.is_empty());
    }

    #[test]
    fn essential_packages_are_not_pulled_implicitly() {
        let idx = index(&[
            "app 1",
            "bash 5 ; Essential: yes",
            "coreutils 9 ; Essential: yes",
        ]);
        let r = resolve(&idx, &req(&["app"]), &[]).unwrap();
        assert_eq!(names(&r), ["app=1"]);
    }

    #[test]
    fn unknown_package_suggests_nearest() {
        let idx = index(&[
            "containerd 1.6",
            "etcd-server 3.4",
            "etcd-client 3.4",
            "runc 1.1",
        ]);
        let err = resolve(&idx, &req(&["containerdd"]), &[]).unwrap_err();
        assert_eq!(
            err,
            ResolveError::UnknownPackage {
                name: "containerdd".into(),
                suggestions: vec!["containerd".into()],
            }
        );
        assert!(err.to_string().contains("did you mean: containerd?"));
        let err = resolve(&idx, &req(&["etcd"]), &[]).unwrap_err();
        assert!(
            err.to_string().contains("etcd-client, etcd-server"),
            "{err}"
        );
        let err = resolve(&idx, &req(&["Bad Name"]), &[]).unwrap_err();
        assert!(matches!(err, ResolveError::BadRequest { .. }));
    }

    #[test]
    fn result_does_not_depend_on_request_order() {
        let idx = index(&["a 1 ; Depends: x | y", "b 1 ; Depends: y | x", "x 1", "y 1"]);
        let r1 = resolve(&idx, &req(&["a", "b"]), &[]).unwrap();
        let r2 = resolve(&idx, &req(&["b", "a"]), &[]).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(names(&r1), ["a=1", "b=1", "x=1"]);
    }

    #[test]
    fn dependency_cycles_terminate() {
        let idx = index(&["a 1 ; Depends: b", "b 1 ; Depends: a"]);
        let r = resolve(&idx, &req(&["a"]), &[]).unwrap();
        assert_eq!(names(&r), ["a=1", "b=1"]);
    }
}
