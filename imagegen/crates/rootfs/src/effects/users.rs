//! System users and groups: `/etc/passwd`, `/etc/group`, `/etc/shadow`,
//! `/etc/gshadow`, built the way base-passwd's postinst and
//! systemd-sysusers (sysusers.d(5)) would on first boot, but at build time
//! and deterministically.
//!
//! Sources, in order:
//! 1. base: `/usr/share/base-passwd/{passwd,group}.master` when present,
//!    else the tree's existing `/etc/passwd` and `/etc/group`, else just root;
//! 2. every `*.conf` in `/usr/lib/sysusers.d` and `/etc/sysusers.d` (a file
//!    in `/etc` replaces the same name in `/usr/lib`), taken in file-name
//!    order: `g`, `u` and `m` lines (`r` ranges are ignored);
//! 3. the extra users the caller passes ([`SystemUser`]).
//!
//! Allocation: names that already exist are left alone. Fixed ids are used
//! when free. Everything else is allocated afterwards, names sorted, from
//! 999 downwards, skipping ids in use; a user with no explicit group gets a
//! group of the same name, with gid = uid (an id free in both spaces is
//! chosen). Passwords are locked: `*` for base accounts, `!*` for allocated
//! ones. `shadow`/`gshadow` are 0640 root:shadow (gid of group `shadow`, 0
//! if there is none); `passwd`/`group` 0644 root:root.

use std::collections::{BTreeMap, BTreeSet};

use tracing::warn;

use crate::tree::{Entry, EntryKind, Tree, TreeError};

/// Lowest id handed out automatically; [`ALLOC_MAX`] is the highest.
pub const ALLOC_MIN: u32 = 100;
/// Highest id handed out automatically (systemd's SYS_UID_MAX default).
pub const ALLOC_MAX: u32 = 999;

/// Errors from building the account databases.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsersError {
    /// A line of a sysusers.d file or base file is malformed.
    #[error("{file}:{line}: {reason}")]
    Syntax {
        /// The file in the tree.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A user or group name is not a valid system account name.
    #[error("invalid account name {name:?} (from {origin})")]
    BadName {
        /// The name.
        name: String,
        /// Where it came from.
        origin: String,
    },
    /// A GECOS, home or shell value would break the colon-separated files.
    #[error("{origin}: {field} {value:?} contains ':' or a line break")]
    BadField {
        /// Which field.
        field: &'static str,
        /// The value.
        value: String,
        /// Where it came from.
        origin: String,
    },
    /// No free id was left in 100..=999.
    #[error("no free system id left in {ALLOC_MIN}..={ALLOC_MAX} for {name}")]
    Exhausted {
        /// The account.
        name: String,
    },
    /// A membership or primary group names a group that does not exist.
    #[error("{origin}: group {group} does not exist")]
    UnknownGroup {
        /// The group.
        group: String,
        /// Where it was referenced.
        origin: String,
    },
    /// Writing the files into the tree failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// An extra system user the caller wants (e.g. `etcd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemUser {
    /// Login name.
    pub name: String,
    /// Fixed uid; `None` allocates one.
    pub uid: Option<u32>,
    /// GECOS field.
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// Supplementary groups (must exist).
    pub groups: Vec<String>,
}

impl SystemUser {
    /// A system user with home `/nonexistent` and shell `/usr/sbin/nologin`.
    pub fn new(name: &str) -> Self {
        SystemUser {
            name: name.to_string(),
            uid: None,
            gecos: name.to_string(),
            home: "/nonexistent".to_string(),
            shell: "/usr/sbin/nologin".to_string(),
            groups: Vec::new(),
        }
    }
}

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// GECOS.
    pub gecos: String,
    /// Home.
    pub home: String,
    /// Shell.
    pub shell: String,
    /// Shadow password field (`*`, `!*`).
    pub locked: &'static str,
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Name.
    pub name: String,
    /// Gid.
    pub gid: u32,
    /// Members, sorted.
    pub members: BTreeSet<String>,
    /// Gshadow password field.
    pub locked: &'static str,
}

/// The account databases, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    /// Users in `/etc/passwd` order.
    pub users: Vec<User>,
    /// Groups in `/etc/group` order.
    pub groups: Vec<Group>,
}

/// A sysusers.d line we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysusersLine {
    /// `g name id`.
    Group {
        /// Name.
        name: String,
        /// Fixed gid.
        gid: Option<u32>,
    },
    /// `u name id gecos home shell`.
    User {
        /// Name.
        name: String,
        /// Fixed uid.
        uid: Option<u32>,
        /// Primary group: a gid or a group name (from `uid:group`).
        group: Option<String>,
        /// GECOS.
        gecos: String,
        /// Home (default `/`).
        home: String,
        /// Shell (default `/usr/sbin/nologin`).
        shell: String,
    },
    /// `m user group`.
    Member {
        /// User.
        user: String,
        /// Group.
        group: String,
    },
}

/// Split a line into fields; double quotes group words (sysusers.d syntax).
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    if have {
        out.push(cur);
    }
    Ok(out)
}

/// A field that may be `-` (unset).
fn opt(f: Option<&String>) -> Option<&str> {
    f.map(String::as_str).filter(|s| *s != "-")
}

/// Parse sysusers.d text. `file` names it in errors.
pub fn parse_sysusers(file: &str, text: &str) -> Result<Vec<SysusersLine>, UsersError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |reason: String| UsersError::Syntax {
            file: file.to_string(),
            line: i + 1,
            reason,
        };
        let f = fields(line).map_err(syntax)?;
        let (Some(kind), Some(name)) = (f.first(), f.get(1)) else {
            return Err(syntax(format!("want at least a type and a name: {line:?}")));
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| syntax(format!("id {s:?} is not a number")))
        };
        // A path as id means "take it from that file's owner": we cannot, so allocate.
        let id = opt(f.get(2)).filter(|s| !s.starts_with('/'));
        match kind.trim_end_matches('!') {
            "g" => out.push(SysusersLine::Group {
                name: name.clone(),
                gid: id.map(num).transpose()?,
            }),
            "u" => {
                let (uid, group) = match id {
                    None => (None, None),
                    Some(s) => match s.split_once(':') {
                        Some((u, g)) => (Some(num(u)?), Some(g.to_string())),
                        None => (Some(num(s)?), None),
                    },
                };
                out.push(SysusersLine::User {
                    name: name.clone(),
                    uid,
                    group,
                    gecos: opt(f.get(3)).unwrap_or("").to_string(),
                    home: opt(f.get(4)).unwrap_or("/").to_string(),
                    shell: opt(f.get(5)).unwrap_or("/usr/sbin/nologin").to_string(),
                })
            }
            "m" => {
                let group = f
                    .get(2)
                    .ok_or_else(|| syntax("`m` needs a user and a group".into()))?;
                out.push(SysusersLine::Member {
                    user: name.clone(),
                    group: group.clone(),
                })
            }
            "r" => {}
            other => warn!(
                file,
                line = i + 1,
                kind = other,
                "ignoring unknown sysusers.d line type"
            ),
        }
    }
    Ok(out)
}

/// True for names useradd would accept for a system account.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().enumerate().all(|(i, &c)| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == b'_'
                || c == b'-'
                || (c == b'$' && i == b.len() - 1)
        })
}

/// Parse passwd-format text (base-passwd master or /etc/passwd).
pub fn parse_passwd(file: &str, text: &str) -> Result<Vec<User>, UsersError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let syntax = |reason: String| UsersError::Syntax {
            file: file.to_string(),
            line: i + 1,
            reason,
        };
        let [name, _pw, uid, gid, gecos, home, shell] = f[..] else {
            return Err(syntax(format!("want 7 fields, got {}", f.len())));
        };
        let uid = uid.parse().map_err(|_| syntax(format!("uid {uid:?}")))?;
        let gid = gid.parse().map_err(|_| syntax(format!("gid {gid:?}")))?;
        out.push(User {
            name: name.into(),
            uid,
            gid,
            gecos: gecos.into(),
            home: home.into(),
            shell: shell.into(),
            locked: "*",
        });
    }
    Ok(out)
}

/// Parse group-format text.
pub fn parse_group(file: &str, text: &str) -> Result<Vec<Group>, UsersError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let syntax = |reason: String| UsersError::Syntax {
            file: file.to_string(),
            line: i + 1,
            reason,
        };
        let [name, _pw, gid, members] = f[..] else {
            return Err(syntax(format!("want 4 fields, got {}", f.len())));
        };
        let gid = gid.parse().map_err(|_| syntax(format!("gid {gid:?}")))?;
        out.push(Group {
            name: name.into(),
            gid,
            members: members
                .split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect(),
            locked: "*",
        });
    }
    Ok(out)
}

/// A pending request to create a user.
struct UserReq {
    name: String,
    uid: Option<u32>,
    group: Option<String>,
    gecos: String,
    home: String,
    shell: String,
    origin: String,
}

impl Accounts {
    fn uid_used(&self, id: u32) -> bool {
        self.users.iter().any(|u| u.uid == id)
    }
    fn gid_used(&self, id: u32) -> bool {
        self.groups.iter().any(|g| g.gid == id)
    }
    fn has_user(&self, name: &str) -> bool {
        self.users.iter().any(|u| u.name == name)
    }
    fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
    fn alloc(&self, name: &str, uid: bool, gid: bool) -> Result<u32, UsersError> {
        (ALLOC_MIN..=ALLOC_MAX)
            .rev()
            .find(|&id| !((uid && self.uid_used(id)) || (gid && self.gid_used(id))))
            .ok_or_else(|| UsersError::Exhausted { name: name.into() })
    }
    fn add_group(&mut self, name: &str, gid: u32) {
        self.groups.push(Group {
            name: name.into(),
            gid,
            members: BTreeSet::new(),
            locked: "!*",
        });
    }

    /// Apply sysusers lines and extra users (the allocation rules are in the module docs).
    pub fn apply(
        &mut self,
        lines: &[(String, SysusersLine)],
        extra: &[SystemUser],
    ) -> Result<(), UsersError> {
        let mut groups_dyn: BTreeSet<String> = BTreeSet::new();
        let mut users: Vec<UserReq> = Vec::new();
        let mut members: Vec<(String, String, String)> = Vec::new();
        let check = |name: &str, origin: &str| {
            if valid_name(name) {
                Ok(())
            } else {
                Err(UsersError::BadName {
                    name: name.into(),
                    origin: origin.into(),
                })
            }
        };
        for (origin, line) in lines {
            match line {
                SysusersLine::Group { name, gid } => {
                    check(name, origin)?;
                    if self.group(name).is_some() {
                        continue;
                    }
                    match gid {
                        Some(g) if !self.gid_used(*g) => self.add_group(name, *g),
                        _ => {
                            groups_dyn.insert(name.clone());
                        }
                    }
                }
                SysusersLine::User {
                    name,
                    uid,
                    group,
                    gecos,
                    home,
                    shell,
                } => {
                    check(name, origin)?;
                    users.push(UserReq {
                        name: name.clone(),
                        uid: *uid,
                        group: group.clone(),
                        gecos: gecos.clone(),
                        home: home.clone(),
                        shell: shell.clone(),
                        origin: origin.clone(),
                    });
                }
                SysusersLine::Member { user, group } => {
                    members.push((user.clone(), group.clone(), origin.clone()))
                }
            }
        }
        for u in extra {
            let origin = format!("extra user {}", u.name);
            check(&u.name, &origin)?;
            users.push(UserReq {
                name: u.name.clone(),
                uid: u.uid,
                group: None,
                gecos: u.gecos.clone(),
                home: u.home.clone(),
                shell: u.shell.clone(),
                origin: origin.clone(),
            });
            for g in &u.groups {
                members.push((u.name.clone(), g.clone(), origin.clone()));
            }
        }
        // Dynamic groups, sorted by name (BTreeSet order).
        for name in groups_dyn {
            if self.group(&name).is_none() {
                let gid = self.alloc(&name, false, true)?;
                self.add_group(&name, gid);
            }
        }
        // Users: fixed uids first (in line order), then the rest sorted by name.
        let mut pending: BTreeMap<String, UserReq> = BTreeMap::new();
        for req in users {
            if self.has_user(&req.name) || pending.contains_key(&req.name) {
                continue;
            }
            match req.uid {
                Some(uid) if !self.uid_used(uid) => self.add_user(req, uid)?,
                _ => {
                    pending.insert(req.name.clone(), req);
                }
            }
        }
        for (_, req) in pending {
            let own_group = req.group.is_none() && self.group(&req.name).is_none();
            let uid = self.alloc(&req.name, true, own_group)?;
            self.add_user(req, uid)?;
        }
        for (user, group, origin) in members {
            let g = self
                .groups
                .iter_mut()
                .find(|g| g.name == group)
                .ok_or_else(|| UsersError::UnknownGroup {
                    group: group.clone(),
                    origin,
                })?;
            g.members.insert(user);
        }
        Ok(())
    }

    fn add_user(&mut self, req: UserReq, uid: u32) -> Result<(), UsersError> {
        for (field, value) in [
            ("GECOS", &req.gecos),
            ("home", &req.home),
            ("shell", &req.shell),
        ] {
            if value.contains([':', '\n', '\r']) {
                return Err(UsersError::BadField {
                    field,
                    value: value.clone(),
                    origin: req.origin.clone(),
                });
            }
        }
        let gid = match &req.group {
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    self.group(g)
                        .ok_or_else(|| UsersError::UnknownGroup {
                            group: g.clone(),
                            origin: req.origin.clone(),
                        })?
                        .gid
                }
            },
            None => match self.group(&req.name) {
                Some(g) => g.gid,
                None => {
                    let gid = if self.gid_used(uid) {
                        self.alloc(&req.name, false, true)?
                    } else {
                        uid
                    };
                    self.add_group(&req.name, gid);
                    gid
                }
            },
        };
        self.users.push(User {
            name: req.name,
            uid,
            gid,
            gecos: req.gecos,
            home: req.home,
            shell: req.shell,
            locked: "!*",
        });
        Ok(())
    }

    /// `/etc/passwd` text.
    pub fn passwd(&self) -> String {
        self.users
            .iter()
            .map(|u| {
                format!(
                    "{}:x:{}:{}:{}:{}:{}\n",
                    u.name, u.uid, u.gid, u.gecos, u.home, u.shell
                )
            })
            .collect()
    }

    /// `/etc/group` text.
    pub fn group_file(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}:x:{}:{}\n", g.name, g.gid, join_members(g)))
            .collect()
    }

    /// `/etc/shadow` text: locked, no aging dates (they would depend on the build day).
    pub fn shadow(&self) -> String {
        self.users
            .iter()
            .map(|u| format!("{}:{}::0:99999:7:::\n", u.name, u.locked))
            .collect()
    }

    /// `/etc/gshadow` text.
    pub fn gshadow(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}:{}::{}\n", g.name, g.locked, join_members(g)))
            .collect()
    }
}

fn join_members(g: &Group) -> String {
    g.members.iter().cloned().collect::<Vec<_>>().join(",")
}

fn read_text(tree: &Tree, path: &str) -> Option<String> {
    match tree.resolve(path) {
        Some((
            _,
            Entry {
                kind: EntryKind::File(c),
                ..
            },
        )) => Some(String::from_utf8_lossy(c).into_owned()),
        _ => None,
    }
}

/// Build the four account files in `tree` from its base-passwd masters,
/// sysusers.d files and `extra` (rules in the module docs). Returns the
/// resulting databases.
pub fn users_and_groups(tree: &mut Tree, extra: &[SystemUser]) -> Result<Accounts, UsersError> {
    let mut acc = Accounts::default();
    let base = [
        (
            "/usr/share/base-passwd/passwd.master",
            "/usr/share/base-passwd/group.master",
        ),
        ("/etc/passwd", "/etc/group"),
    ]
    .into_iter()
    .find_map(|(p, g)| Some((p, read_text(tree, p)?, g, read_text(tree, g)?)));
    match base {
        Some((pf, p, gf, g)) => {
            acc.users = parse_passwd(pf, &p)?;
            acc.groups = parse_group(gf, &g)?;
        }
        None => {
            acc.users = parse_passwd("<default>", "root:*:0:0:root:/root:/bin/sh\n")?;
            acc.groups = parse_group("<default>", "root:*:0:\n")?;
        }
    }
    // sysusers.d: /etc overrides /usr/lib by file name; name order.
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for dir in ["/usr/lib/sysusers.d", "/etc/sysusers.d"] {
        let Some((real, _)) = tree.resolve(dir) else {
            continue;
        };
        for (path, _) in tree.iter_under(&real) {
            if let Some(name) = path.rsplit('/').next().filter(|n| n.ends_with(".conf")) {
                if crate::tree::split_parent(path).map(|(p, _)| p) == Some(real.as_str()) {
                    files.insert(name.to_string(), path.to_string());
                }
            }
        }
    }
    let mut lines = Vec::new();
    for path in files.values() {
        // /dev/null symlinks mask a file: read_text yields None for them.
        let Some(text) = read_text(tree, path) else {
            continue;
        };
        for line in parse_sysusers(path, &text)? {
            lines.push((path.clone(), line));
        }
    }
    acc.apply(&lines, extra)?;
    let shadow_gid = acc.group("shadow").map_or(0, |g| g.gid);
    tree.add_file("/etc/passwd", acc.passwd().into_bytes(), 0o644, 0, 0)?;
    tree.add_file("/etc/group", acc.group_file().into_bytes(), 0o644, 0, 0)?;
    tree.add_file(
        "/etc/shadow",
        acc.shadow().into_bytes(),
        0o640,
        0,
        shadow_gid,
    )?;
    tree.add_file(
        "/etc/gshadow",
        acc.gshadow().into_bytes(),
        0o640,
        0,
        shadow_gid,
    )?;
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysusers_parse_table() {
        let l = parse_sysusers(
            "f",
            "# c\ng systemd-journal - -\nu systemd-network - \"systemd Network Management\"\nu sync 4:65534 - /bin /bin/sync\nu! locked 5:games\nm etcd adm\nr - 500-900\n",
        )
        .unwrap();
        assert_eq!(
            l,
            [
                SysusersLine::Group {
                    name: "systemd-journal".into(),
                    gid: None
                },
                SysusersLine::User {
                    name: "systemd-network".into(),
                    uid: None,
                    group: None,
                    gecos: "systemd Network Management".into(),
                    home: "/".into(),
                    shell: "/usr/sbin/nologin".into()
                },
                SysusersLine::User {
                    name: "sync".into(),
                    uid: Some(4),
                    group: Some("65534".into()),
                    gecos: "".into(),
                    home: "/bin".into(),
                    shell: "/bin/sync".into()
                },
                SysusersLine::User {
                    name: "locked".into(),
                    uid: Some(5),
                    group: Some("games".into()),
                    gecos: "".into(),
                    home: "/".into(),
                    shell: "/usr/sbin/nologin".into()
                },
                SysusersLine::Member {
                    user: "etcd".into(),
                    group: "adm".into()
                },
            ]
        );
        for (bad, line) in [("g x abc", 1), ("\nu \"open", 2), ("m only", 1), ("u", 1)] {
            match parse_sysusers("f", bad) {
                Err(UsersError::Syntax { line: l, .. }) => assert_eq!(l, line, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn names_are_checked() {
        for ok in ["etcd", "_apt", "systemd-network", "a1", "host$"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Root", "1abc", "a b", "a:b", "x$y", &"a".repeat(33)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
