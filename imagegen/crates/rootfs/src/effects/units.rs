//! Enabling systemd units at build time: the symlinks `systemctl enable`
//! creates (systemd.unit(5), section "[Install] Section Options").
//!
//! For each unit, its file is looked up in `/etc/systemd/system`, then
//! `/usr/lib/systemd/system` (then `/lib/systemd/system` for trees that are
//! not merged). From its `[Install]` section:
//! - `WantedBy=T` → `/etc/systemd/system/T.wants/U -> <unit file>`;
//! - `RequiredBy=T` → the same in `T.requires/`;
//! - `Alias=A` → `/etc/systemd/system/A -> <unit file>`;
//! - `Also=X` → X is enabled too.
//!
//! Templates: enabling `foo@bar.service` uses `foo@.service` and names the
//! links `foo@bar.service`; enabling `foo@.service` uses its
//! `DefaultInstance=` (and is an error without one, as with systemctl).
//! Specifiers (`%i`...) are not expanded. A unit without an `[Install]`
//! section is reported in [`Enabled::static_units`] (systemctl only warns).
//! Finally `/etc/systemd/system/default.target` links to the default target.
//! Link targets are absolute, like systemctl's.

use std::collections::BTreeSet;

use crate::tree::{EntryKind, Tree, TreeError};

/// Where enabled links go.
pub const ETC_UNITS: &str = "/etc/systemd/system";
/// Unit search path, highest priority first.
pub const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Errors from enabling units.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitsError {
    /// No unit file for the name in the search path.
    #[error("unit {unit} not found in {dirs}", dirs = UNIT_DIRS.join(", "))]
    NotFound {
        /// The unit.
        unit: String,
    },
    /// A template was enabled without an instance and has no DefaultInstance=.
    #[error("template {unit} has no DefaultInstance=; name an instance (foo@bar.service)")]
    NoInstance {
        /// The unit.
        unit: String,
    },
    /// A unit name or an [Install] value is not a valid unit name.
    #[error("invalid unit name {name:?} (in {context})")]
    BadName {
        /// The name.
        name: String,
        /// Where it was found.
        context: String,
    },
    /// Creating a link failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// The `[Install]` section of a unit file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// `WantedBy=`.
    pub wanted_by: Vec<String>,
    /// `RequiredBy=`.
    pub required_by: Vec<String>,
    /// `Alias=`.
    pub alias: Vec<String>,
    /// `Also=`.
    pub also: Vec<String>,
    /// `DefaultInstance=`.
    pub default_instance: Option<String>,
}

impl Install {
    fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }
}

/// Parse the `[Install]` section of unit file text: keys may repeat, values
/// are space-separated lists, an empty assignment resets the list, `\`
/// continues a line.
pub fn parse_install(text: &str) -> Install {
    let mut install = Install::default();
    let mut in_install = false;
    let mut logical = String::new();
    let mut lines = Vec::new();
    for raw in text.lines() {
        if let Some(stripped) = raw.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        lines.push(std::mem::take(&mut logical));
    }
    lines.push(logical);
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let list = match k.trim() {
            "WantedBy" => &mut install.wanted_by,
            "RequiredBy" => &mut install.required_by,
            "Alias" => &mut install.alias,
            "Also" => &mut install.also,
            "DefaultInstance" => {
                let v = v.trim();
                install.default_instance = (!v.is_empty()).then(|| v.to_string());
                continue;
            }
            _ => continue,
        };
        if v.trim().is_empty() {
            list.clear();
        }
        list.extend(v.split_whitespace().map(String::from));
    }
    install
}

/// What [`enable_units`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enabled {
    /// Links created: (link path, target).
    pub links: Vec<(String, String)>,
    /// Units that have no `[Install]` section (nothing to enable).
    pub static_units: Vec<String>,
}

fn valid_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains('/')
        && name
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.is_empty() && !ext.is_empty())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

/// Find a unit file by name: (path of the file, its text).
fn find_unit(tree: &Tree, name: &str) -> Option<(String, String)> {
    for dir in UNIT_DIRS {
        let path = format!("{dir}/{name}");
        if let Some((_, e)) = tree.resolve(&path) {
            if let EntryKind::File(c) = &e.kind {
                return Some((path, String::from_utf8_lossy(c).into_owned()));
            }
        }
    }
    None
}

/// Enable `units` and set `default_target` (e.g. `multi-user.target`) as the
/// default; see the module docs. Idempotent.
pub fn enable_units(
    tree: &mut Tree,
    units: &[String],
    default_target: &str,
) -> Result<Enabled, UnitsError> {
    let mut done = Enabled::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<(String, String)> = units
        .iter()
        .map(|u| (u.clone(), "the unit list".to_string()))
        .collect();
    queue.reverse();
    while let Some((unit, context)) = queue.pop() {
        if !valid_unit_name(&unit) {
            return Err(UnitsError::BadName {
                name: unit,
                context,
            });
        }
        if !seen.insert(unit.clone()) {
            continue;
        }
        // Template handling: foo@bar.service → file foo@.service, instance bar.
        let (file_name, instance) = match unit.split_once('@') {
            Some((prefix, rest)) => {
                let (inst, suffix) = rest.rsplit_once('.').unwrap_or((rest, ""));
                (
                    format!("{prefix}@.{suffix}"),
                    (!inst.is_empty()).then(|| inst.to_string()),
                )
            }
            None => (unit.clone(), None),
        };
        let found = find_unit(tree, &unit).or_else(|| {
            if file_name != unit {
                find_unit(tree, &file_name)
            } else {
                None
            }
        });
        let (path, text) = found.ok_or_else(|| UnitsError::NotFound { unit: unit.clone() })?;
        let install = parse_install(&text);
        if install.is_empty() {
            done.static_units.push(unit.clone());
            continue;
        }
        let link_name = if unit.contains('@') {
            match instance.or(install.default_instance.clone()) {
                Some(inst) => file_name.replacen("@.", &format!("@{inst}."), 1),
                None => return Err(UnitsError::NoInstance { unit }),
            }
        } else {
            unit.clone()
        };
        let ctx = format!("[Install] of {path}");
        for (targets, dir_suffix) in [
            (&install.wanted_by, "wants"),
            (&install.required_by, "requires"),
        ] {
            for t in targets {
                if !valid_unit_name(t) {
                    return Err(UnitsError::BadName {
                        name: t.clone(),
                        context: ctx.clone(),
                    });
                }
                let link = format!("{ETC_UNITS}/{t}.{dir_suffix}/{link_name}");
                tree.add_symlink(&link, &path)?;
                done.links.push((link, path.clone()));
            }
        }
        for a in &install.alias {
            if !valid_unit_name(a) {
                return Err(UnitsError::BadName {
                    name: a.clone(),
                    context: ctx.clone(),
                });
            }
            let link = format!("{ETC_UNITS}/{a}");
            if link != path {
                tree.add_symlink(&link, &path)?;
                done.links.push((link, path.clone()));
            }
        }
        for also in install.also.iter().rev() {
            queue.push((also.clone(), ctx.clone()));
        }
    }
    let (target_path, _) = find_unit(tree, default_target).ok_or_else(|| UnitsError::NotFound {
        unit: default_target.to_string(),
    })?;
    let link = format!("{ETC_UNITS}/default.target");
    if link != target_path {
        tree.add_symlink(&link, &target_path)?;
        done.links.push((link, target_path));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section_parsing() {
        let i = parse_install(
            "[Unit]\nWantedBy=not-this.target\n[Install]\nWantedBy=a.target \\\n  b.target\nWantedBy=c.target\nAlias=x.service\nAlias=\nAlias=y.service\nAlso=z.socket\nDefaultInstance=tty1\n[X-Other]\nWantedBy=no.target\n",
        );
        assert_eq!(i.wanted_by, ["a.target", "b.target", "c.target"]);
        assert_eq!(i.alias, ["y.service"]);
        assert_eq!(i.also, ["z.socket"]);
        assert_eq!(i.default_instance.as_deref(), Some("tty1"));
        assert!(parse_install("[Service]\nExecStart=/bin/true\n").is_empty());
    }

    #[test]
    fn unit_names() {
        for ok in [
            "a.service",
            "getty@tty1.service",
            "dev-vda.device",
            "x\\x2d.mount",
        ] {
            assert!(valid_unit_name(ok), "{ok}");
        }
        for bad in [
            "",
            "noext",
            ".service",
            "a/b.service",
            "a b.service",
            "../x.service",
        ] {
            assert!(!valid_unit_name(bad), "{bad}");
        }
    }
}
