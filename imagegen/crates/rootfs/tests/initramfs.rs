//! The initramfs writer: golden listing, read-back, determinism, clamped mtimes.
mod support;

use rootfs::cpio::{list, write_cpio, write_initramfs, DEFAULT_LEVEL};
use rootfs::{effects, Tree, UnpackOptions};
use support::{simple_deb, Item};

const EPOCH: u64 = 1_700_000_000;

fn fixture_tree() -> Tree {
    let mut t = Tree::new();
    effects::merge_usr(&mut t).unwrap();
    let pkg = simple_deb(
        "fixture",
        &[
            Item::Dir("./", 0o755, 0, 0),
            Item::Dir("./bin/", 0o755, 0, 0),
            Item::File("./bin/tool", b"\x7fELF tool", 0o4755, 0, 0),
            Item::Hardlink("./bin/tool2", "./bin/tool"),
            Item::Symlink("./bin/t", "tool"),
            Item::Dir("./var/lib/thing/", 0o2770, 104, 110),
            Item::File("./etc/thing.conf", b"key=value\n", 0o640, 0, 42),
            Item::Char("./dev/console", 0o600, 5, 1),
        ],
    );
    t.unpack_deb(&pkg, &UnpackOptions::default()).unwrap();
    t.add_symlink("/init", "/usr/lib/systemd/systemd").unwrap();
    t.add_file("/etc/machine-id", Vec::new(), 0o444, 0, 0)
        .unwrap();
    t
}

#[test]
fn golden_listing_and_read_back() {
    let t = fixture_tree();
    let mut out = Vec::new();
    let stats = write_initramfs(&t, EPOCH, DEFAULT_LEVEL, &mut out).unwrap();
    assert_eq!(stats.compressed_bytes, out.len() as u64);
    assert_eq!(stats.entries, t.len() - 1, "every entry but / is written");

    let listed = list(&out[..]).unwrap();
    assert_eq!(listed.len(), stats.entries);
    let text: String = listed.iter().map(|e| e.line() + "\n").collect();
    let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/fixture.listing");
    if std::env::var_os("ROOTFS_BLESS").is_some() {
        std::fs::write(golden_path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(golden_path).unwrap();
    assert_eq!(
        text, golden,
        "listing differs from {golden_path} (ROOTFS_BLESS=1 rewrites it)"
    );

    // every mtime is the epoch, inodes are 1.. in order except hard links
    assert!(listed.iter().all(|e| e.mtime == EPOCH as u32));
    let tool = listed.iter().find(|e| e.path == "usr/bin/tool").unwrap();
    let tool2 = listed.iter().find(|e| e.path == "usr/bin/tool2").unwrap();
    assert_eq!((tool.ino, tool.nlink), (tool2.ino, 2));
    // the uncompressed figure is the plain archive's size
    let mut plain = Vec::new();
    write_cpio(&t, EPOCH, &mut plain).unwrap();
    assert_eq!(stats.uncompressed_bytes, plain.len() as u64);
    assert_eq!(
        list(&plain[..]).unwrap(),
        listed,
        "plain and zstd archives list the same"
    );
    // the system cpio agrees the archive is valid newc
    assert_cpio_tool_lists(
        &plain,
        &listed.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
    );
}

fn assert_cpio_tool_lists(archive: &[u8], want: &[&str]) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("cpio")
        .args(["-it", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running `cpio` (install the Debian package `cpio`)");
    child.stdin.take().unwrap().write_all(archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "cpio -it failed");
    let got: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(got, want);
}

#[test]
fn same_input_same_bytes_and_epoch_matters() {
    let a = fixture_tree();
    let b = fixture_tree(); // built again from scratch: new allocations, same content
    let mut out_a = Vec::new();
    let mut out_b = Vec::new();
    write_initramfs(&a, EPOCH, 3, &mut out_a).unwrap();
    write_initramfs(&b, EPOCH, 3, &mut out_b).unwrap();
    assert_eq!(out_a, out_b);
    let mut out_c = Vec::new();
    write_initramfs(&a, EPOCH + 1, 3, &mut out_c).unwrap();
    assert_ne!(out_a, out_c);
}

#[test]
fn garbage_input_to_list_is_an_error() {
    assert!(list(&b"070701garbage"[..]).is_err());
    assert!(list(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3][..]).is_err());
    assert!(list(&b""[..]).is_err());
}
