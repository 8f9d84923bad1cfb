//! Unpacking .deb fixtures built in memory: metadata comes from the archive,
//! merged /usr mapping, all-or-nothing on error.
mod support;

use rootfs::{DebError, EntryKind, Tree, UnpackOptions};
use support::{deb, simple_deb, Comp, Item};

fn fixture_items() -> Vec<Item> {
    vec![
        Item::Dir("./", 0o755, 0, 0),
        Item::Dir("./bin/", 0o755, 0, 0),
        Item::File("./bin/tool", b"\x7fELF tool", 0o4755, 0, 0),
        Item::Hardlink("./bin/tool2", "./bin/tool"),
        Item::Symlink("./bin/t", "tool"),
        Item::Dir("./lib64/", 0o755, 0, 0),
        Item::Symlink(
            "./lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        ),
        Item::Dir("./var/lib/thing/", 0o2770, 104, 110),
        Item::File("./etc/thing.conf", b"key=value\n", 0o640, 0, 42),
        Item::Char("./dev/null", 0o666, 1, 3),
        Item::Block("./dev/vda", 0o660, 254, 0),
    ]
}

#[test]
fn metadata_comes_from_the_archive_for_every_compression() {
    for comp in [Comp::Xz, Comp::Zst, Comp::Gz] {
        let bytes = deb(
            "Package: thing\nVersion: 2:1.2-3\nArchitecture: amd64\n",
            &fixture_items(),
            comp,
        );
        let mut t = Tree::new();
        let info = t
            .unpack_deb(
                &bytes,
                &UnpackOptions {
                    merged_usr: false,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(info.package, "thing");
        assert_eq!(info.version, "2:1.2-3");
        assert_eq!(info.architecture.as_deref(), Some("amd64"));
        assert_eq!(info.content_bytes, 9 + 10);

        let tool = t.get("/bin/tool").unwrap();
        assert_eq!((tool.mode, tool.uid, tool.gid), (0o4755, 0, 0));
        let EntryKind::File(c1) = &tool.kind else {
            panic!("tool is a {}", tool.kind.name())
        };
        let EntryKind::File(c2) = &t.get("/bin/tool2").unwrap().kind else {
            panic!("tool2 not a file")
        };
        assert!(std::sync::Arc::ptr_eq(c1, c2), "hard link shares content");
        assert_eq!(
            t.get("/bin/t").unwrap().kind,
            EntryKind::Symlink("tool".into())
        );
        let v = t.get("/var/lib/thing").unwrap();
        assert_eq!((v.mode, v.uid, v.gid), (0o2770, 104, 110));
        // parents the archive did not list are created 0755 root
        assert_eq!(t.get("/var").unwrap().mode, 0o755);
        let conf = t.get("/etc/thing.conf").unwrap();
        assert_eq!((conf.mode, conf.gid), (0o640, 42));
        assert_eq!(
            t.get("/dev/null").unwrap().kind,
            EntryKind::CharDevice { major: 1, minor: 3 }
        );
        let vda = t.get("/dev/vda").unwrap();
        assert_eq!(
            vda.kind,
            EntryKind::BlockDevice {
                major: 254,
                minor: 0
            }
        );
        assert_eq!((vda.mode, vda.gid), (0o660, 6));
    }
}

#[test]
fn merged_usr_maps_paths_while_unpacking() {
    let mut t = Tree::new();
    rootfs::effects::merge_usr(&mut t).unwrap();
    let info = t
        .unpack_deb(
            &simple_deb("thing", &fixture_items()),
            &UnpackOptions::default(),
        )
        .unwrap();
    assert!(info.entries > 0);
    assert!(t.get("/usr/bin/tool").is_some());
    assert!(t.get("/usr/bin/tool2").is_some());
    assert_eq!(
        t.get("/bin").unwrap().kind,
        EntryKind::Symlink("usr/bin".into())
    );
    assert!(matches!(
        t.resolve("/bin/tool").unwrap().1.kind,
        EntryKind::File(_)
    ));
    assert_eq!(
        t.get("/usr/lib64/ld-linux-x86-64.so.2").unwrap().kind,
        EntryKind::Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into())
    );
    // a second package shipping a compat link to the same place does not clobber the file
    let compat = simple_deb("compat", &[Item::Symlink("./usr/bin/tool", "/bin/tool")]);
    t.unpack_deb(&compat, &UnpackOptions::default()).unwrap();
    assert!(matches!(
        t.get("/usr/bin/tool").unwrap().kind,
        EntryKind::File(_)
    ));
}

#[test]
fn errors_name_the_package_and_leave_the_tree_unchanged() {
    let mut t = Tree::new();
    t.add_file("/etc/keep", b"k".to_vec(), 0o644, 0, 0).unwrap();
    let before = t.clone();

    let bad_link = simple_deb(
        "broken",
        &[
            Item::File("./a", b"x", 0o644, 0, 0),
            Item::Hardlink("./b", "./missing"),
        ],
    );
    let err = t
        .unpack_deb(&bad_link, &UnpackOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, DebError::BadEntry { ref package, .. } if package == "broken"),
        "{err}"
    );
    assert!(err.to_string().contains("\"/b\""), "{err}");
    assert_eq!(t, before);

    let big = simple_deb("big", &[Item::File("./a", b"0123456789", 0o644, 0, 0)]);
    let err = t
        .unpack_deb(
            &big,
            &UnpackOptions {
                merged_usr: true,
                max_unpacked_bytes: 5,
            },
        )
        .unwrap_err();
    assert!(matches!(err, DebError::TooLarge { limit: 5, .. }), "{err}");

    let file_over_dir = simple_deb("clash", &[Item::File("./etc", b"x", 0o644, 0, 0)]);
    let err = t
        .unpack_deb(&file_over_dir, &UnpackOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("clash"), "{err}");
    assert_eq!(t, before);

    let no_version = deb("Package: nov\n", &[], Comp::Gz);
    let err = t
        .unpack_deb(&no_version, &UnpackOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("no Version field"), "{err}");

    // truncated .deb: an error, never a partial tree
    let whole = simple_deb("cut", &fixture_items());
    for cut in [8, 70, whole.len() / 2, whole.len() - 10] {
        assert!(
            t.unpack_deb(&whole[..cut], &UnpackOptions::default())
                .is_err(),
            "cut at {cut}"
        );
        assert_eq!(t, before);
    }
}

#[test]
fn read_control_returns_fields() {
    let bytes = simple_deb("etcd-server", &[]);
    let f = rootfs::deb::read_control(&bytes).unwrap();
    assert!(f.contains(&("Package".to_string(), "etcd-server".to_string())));
}
