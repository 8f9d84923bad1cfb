//! Maintainer-script replacements on fixture trees: accounts from
//! base-passwd + sysusers.d + extra users, unit enabling, alternatives.
use rootfs::effects::{self, AlternativesError, SystemUser, UnitsError, UsersError};
use rootfs::{EntryKind, Tree};

fn text(t: &Tree, path: &str) -> String {
    match &t.get(path).unwrap_or_else(|| panic!("{path} missing")).kind {
        EntryKind::File(c) => String::from_utf8(c.to_vec()).unwrap(),
        k => panic!("{path} is a {}", k.name()),
    }
}

fn accounts_tree() -> Tree {
    let mut t = Tree::new();
    let add = |t: &mut Tree, p: &str, s: &str| {
        t.add_file(p, s.as_bytes().to_vec(), 0o644, 0, 0).unwrap();
    };
    add(
        &mut t,
        "/usr/share/base-passwd/passwd.master",
        "root:*:0:0:root:/root:/bin/bash\ndaemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    );
    add(
        &mut t,
        "/usr/share/base-passwd/group.master",
        "root:*:0:\ndaemon:*:1:\nadm:*:4:\nshadow:*:42:\nnogroup:*:65534:\n",
    );
    add(
        &mut t,
        "/usr/lib/sysusers.d/basic.conf",
        "g adm 4 -\nu root 0 - /root /bin/bash\n",
    );
    add(
        &mut t,
        "/usr/lib/sysusers.d/systemd-journal.conf",
        "g systemd-journal - -\n",
    );
    add(
        &mut t,
        "/usr/lib/sysusers.d/systemd-network.conf",
        "u systemd-network - \"systemd Network Management\"\n",
    );
    // fixed id that is free, and a fixed id that is taken (falls back to allocation)
    add(
        &mut t,
        "/usr/lib/sysusers.d/x.conf",
        "u fixed 500 \"Fixed\" /var/lib/fixed\nu clash 1 -\nm systemd-network systemd-journal\n",
    );
    // /etc overrides the file of the same name
    add(
        &mut t,
        "/etc/sysusers.d/x.conf",
        "u fixed 501 \"Fixed\" /var/lib/fixed\nu clash 1 -\nm systemd-network systemd-journal\n",
    );
    t
}

#[test]
fn accounts_are_deterministic_and_locked() {
    let mut t = accounts_tree();
    let mut etcd = SystemUser::new("etcd");
    etcd.home = "/var/lib/etcd".into();
    etcd.groups = vec!["adm".into()];
    effects::users_and_groups(&mut t, &[etcd.clone()]).unwrap();

    assert_eq!(
        text(&t, "/etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n\
         daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
         fixed:x:501:501:Fixed:/var/lib/fixed:/usr/sbin/nologin\n\
         clash:x:998:998::/:/usr/sbin/nologin\n\
         etcd:x:997:997:etcd:/var/lib/etcd:/usr/sbin/nologin\n\
         systemd-network:x:996:996:systemd Network Management:/:/usr/sbin/nologin\n"
    );
    assert_eq!(
        text(&t, "/etc/group"),
        "root:x:0:\ndaemon:x:1:\nadm:x:4:etcd\nshadow:x:42:\nnogroup:x:65534:\n\
         systemd-journal:x:999:systemd-network\nfixed:x:501:\nclash:x:998:\netcd:x:997:\nsystemd-network:x:996:\n"
    );
    let shadow = text(&t, "/etc/shadow");
    assert!(shadow.starts_with("root:*::0:99999:7:::\n"), "{shadow}");
    assert!(shadow.contains("etcd:!*::0:99999:7:::\n"), "{shadow}");
    assert!(text(&t, "/etc/gshadow").contains("systemd-journal:!*::systemd-network\n"));
    let s = t.get("/etc/shadow").unwrap();
    assert_eq!((s.mode, s.uid, s.gid), (0o640, 0, 42));
    assert_eq!(t.get("/etc/passwd").unwrap().mode, 0o644);

    // same inputs, same bytes; and running it again changes nothing
    let mut again = accounts_tree();
    effects::users_and_groups(&mut again, &[etcd.clone()]).unwrap();
    assert_eq!(text(&again, "/etc/passwd"), text(&t, "/etc/passwd"));
    let before = text(&t, "/etc/group");
    effects::users_and_groups(&mut t, &[etcd]).unwrap();
    assert_eq!(text(&t, "/etc/group"), before);
}

#[test]
fn account_errors_say_where() {
    let mut t = accounts_tree();
    t.add_file(
        "/usr/lib/sysusers.d/bad.conf",
        b"u ok -\nu bad abc\n".to_vec(),
        0o644,
        0,
        0,
    )
    .unwrap();
    let err = effects::users_and_groups(&mut t, &[]).unwrap_err();
    assert_eq!(
        err,
        UsersError::Syntax {
            file: "/usr/lib/sysusers.d/bad.conf".into(),
            line: 2,
            reason: "id \"abc\" is not a number".into()
        }
    );
    let mut t = accounts_tree();
    let mut u = SystemUser::new("etcd");
    u.groups = vec!["nosuchgroup".into()];
    let err = effects::users_and_groups(&mut t, &[u]).unwrap_err();
    assert!(
        matches!(err, UsersError::UnknownGroup { ref group, .. } if group == "nosuchgroup"),
        "{err}"
    );
    let err = effects::users_and_groups(&mut accounts_tree(), &[SystemUser::new("Bad Name")])
        .unwrap_err();
    assert!(matches!(err, UsersError::BadName { .. }), "{err}");
}

#[test]
fn no_base_passwd_gives_root_only_base() {
    let mut t = Tree::new();
    let acc = effects::users_and_groups(&mut t, &[SystemUser::new("etcd")]).unwrap();
    assert_eq!(
        text(&t, "/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\netcd:x:999:999:etcd:/nonexistent:/usr/sbin/nologin\n"
    );
    assert_eq!(acc.groups.len(), 2);
}

fn units_tree() -> Tree {
    let mut t = Tree::new();
    effects::merge_usr(&mut t).unwrap();
    let unit = |t: &mut Tree, name: &str, body: &str| {
        t.add_file(
            &format!("/lib/systemd/system/{name}"),
            body.as_bytes().to_vec(),
            0o644,
            0,
            0,
        )
        .unwrap();
    };
    unit(
        &mut t,
        "multi-user.target",
        "[Unit]\nDescription=Multi-User\n",
    );
    unit(
        &mut t,
        "systemd-networkd.service",
        "[Service]\nExecStart=x\n[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket\nAlias=dbus-org.freedesktop.network1.service\n",
    );
    unit(
        &mut t,
        "systemd-networkd.socket",
        "[Socket]\n[Install]\nWantedBy=sockets.target\n",
    );
    unit(
        &mut t,
        "getty@.service",
        "[Service]\n[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
    );
    unit(
        &mut t,
        "serial-getty@.service",
        "[Service]\n[Install]\nWantedBy=getty.target\n",
    );
    unit(&mut t, "static.service", "[Service]\nExecStart=x\n");
    t.add_file(
        "/etc/systemd/system/kubeboot-agent.service",
        b"[Install]\nRequiredBy=multi-user.target\n".to_vec(),
        0o644,
        0,
        0,
    )
    .unwrap();
    t
}

#[test]
fn enabling_creates_systemctl_links() {
    let mut t = units_tree();
    let units: Vec<String> = [
        "systemd-networkd.service",
        "getty@.service",
        "serial-getty@ttyS0.service",
        "static.service",
        "kubeboot-agent.service",
    ]
    .map(String::from)
    .to_vec();
    let done = effects::enable_units(&mut t, &units, "multi-user.target").unwrap();
    let links: Vec<String> = done
        .links
        .iter()
        .map(|(l, t)| format!("{l} -> {t}"))
        .collect();
    assert_eq!(
        links,
        [
            "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service -> /usr/lib/systemd/system/systemd-networkd.service",
            "/etc/systemd/system/dbus-org.freedesktop.network1.service -> /usr/lib/systemd/system/systemd-networkd.service",
            "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket -> /usr/lib/systemd/system/systemd-networkd.socket",
            "/etc/systemd/system/getty.target.wants/getty@tty1.service -> /usr/lib/systemd/system/getty@.service",
            "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service -> /usr/lib/systemd/system/serial-getty@.service",
            "/etc/systemd/system/multi-user.target.requires/kubeboot-agent.service -> /etc/systemd/system/kubeboot-agent.service",
            "/etc/systemd/system/default.target -> /usr/lib/systemd/system/multi-user.target",
        ]
    );
    assert_eq!(done.static_units, ["static.service"]);
    // the links are in the tree and resolve to the unit files
    let (p, _) = t
        .resolve("/etc/systemd/system/getty.target.wants/getty@tty1.service")
        .unwrap();
    assert_eq!(p, "/usr/lib/systemd/system/getty@.service");
    // idempotent
    let before = t.clone();
    effects::enable_units(&mut t, &units, "multi-user.target").unwrap();
    assert_eq!(t, before);
}

#[test]
fn enabling_errors() {
    let mut t = units_tree();
    let e =
        effects::enable_units(&mut t, &["nope.service".into()], "multi-user.target").unwrap_err();
    assert_eq!(
        e,
        UnitsError::NotFound {
            unit: "nope.service".into()
        }
    );
    let e = effects::enable_units(
        &mut t,
        &["serial-getty@.service".into()],
        "multi-user.target",
    )
    .unwrap_err();
    assert_eq!(
        e,
        UnitsError::NoInstance {
            unit: "serial-getty@.service".into()
        }
    );
    let e = effects::enable_units(&mut t, &[], "graphical.target").unwrap_err();
    assert_eq!(
        e,
        UnitsError::NotFound {
            unit: "graphical.target".into()
        }
    );
    let e =
        effects::enable_units(&mut t, &["../etc/passwd".into()], "multi-user.target").unwrap_err();
    assert!(matches!(e, UnitsError::BadName { .. }));
}

#[test]
fn alternatives_and_machine_id() {
    let mut t = Tree::new();
    effects::merge_usr(&mut t).unwrap();
    t.add_file("/usr/bin/mawk", b"ELF".to_vec(), 0o755, 0, 0)
        .unwrap();
    effects::alternatives(&mut t, &[("/usr/bin/awk".into(), "/usr/bin/mawk".into())]).unwrap();
    assert_eq!(
        t.get("/usr/bin/awk").unwrap().kind,
        EntryKind::Symlink("/usr/bin/mawk".into())
    );
    let e = effects::alternatives(&mut t, &[("/usr/bin/vi".into(), "/usr/bin/nvi".into())])
        .unwrap_err();
    assert!(matches!(e, AlternativesError::MissingTarget { .. }), "{e}");
    effects::machine_id(&mut t).unwrap();
    let m = t.get("/etc/machine-id").unwrap();
    assert_eq!((m.mode, m.size()), (0o444, 0));
}

#[test]
fn initramfs_basics_adds_console_and_mount_points() {
    let mut t = Tree::new();
    t.add_dir("/tmp", 0o1777, 0, 0).unwrap();
    effects::initramfs_basics(&mut t).unwrap();
    let c = t.get("/dev/console").unwrap();
    assert_eq!(
        (c.kind.clone(), c.mode),
        (EntryKind::CharDevice { major: 5, minor: 1 }, 0o600)
    );
    assert_eq!(t.get("/proc").unwrap().mode, 0o555);
    assert_eq!(t.get("/tmp").unwrap().mode, 0o1777);
    assert!(t.get("/run").unwrap().is_dir());
}
