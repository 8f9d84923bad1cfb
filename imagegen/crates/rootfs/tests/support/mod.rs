//! Builds small `.deb` files in memory for the tests: an `ar` archive with
//! `debian-binary`, `control.tar.gz` and `data.tar.<comp>`.
#![allow(dead_code)]

use std::io::Write;

/// One data.tar member.
pub enum Item {
    Dir(&'static str, u32, u64, u64),
    File(&'static str, &'static [u8], u32, u64, u64),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Char(&'static str, u32, u32, u32),
    Block(&'static str, u32, u32, u32),
}

/// Compression of data.tar.
#[derive(Clone, Copy)]
pub enum Comp {
    Xz,
    Zst,
    Gz,
}

fn header(
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

pub fn tar_bytes(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        match *item {
            Item::Dir(p, mode, uid, gid) => {
                let mut h = header(p, tar::EntryType::Directory, mode, uid, gid, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Item::File(p, data, mode, uid, gid) => {
                let mut h = header(
                    p,
                    tar::EntryType::Regular,
                    mode,
                    uid,
                    gid,
                    data.len() as u64,
                );
                h.set_cksum();
                b.append(&h, data).unwrap();
            }
            Item::Symlink(p, target) => {
                let mut h = header(p, tar::EntryType::Symlink, 0o777, 0, 0, 0);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Item::Hardlink(p, target) => {
                let mut h = header(p, tar::EntryType::Link, 0o755, 0, 0, 0);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Item::Char(p, mode, major, minor) | Item::Block(p, mode, major, minor) => {
                let kind = if matches!(item, Item::Char(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = header(p, kind, mode, 0, 6, 0);
                h.set_device_major(major).unwrap();
                h.set_device_minor(minor).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn compress(data: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Comp::Zst => zstd::encode_all(data, 3).unwrap(),
        Comp::Gz => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

/// A complete .deb with the given control text and data items.
pub fn deb(control: &str, items: &[Item], comp: Comp) -> Vec<u8> {
    let control_tar = tar_bytes(&[
        Item::Dir("./", 0o755, 0, 0),
        Item::File(
            "./control",
            Box::leak(control.as_bytes().to_vec().into_boxed_slice()),
            0o644,
            0,
            0,
        ),
    ]);
    let data_tar = tar_bytes(items);
    let ext = match comp {
        Comp::Xz => "xz",
        Comp::Zst => "zst",
        Comp::Gz => "gz",
    };
    let mut ar = ar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("debian-binary".to_string(), b"2.0\n".to_vec()),
        (
            "control.tar.gz".to_string(),
            compress(&control_tar, Comp::Gz),
        ),
        (format!("data.tar.{ext}"), compress(&data_tar, comp)),
    ] {
        let h = ar::Header::new(name.into_bytes(), bytes.len() as u64);
        ar.append(&h, &bytes[..]).unwrap();
    }
    ar.into_inner().unwrap()
}

/// A .deb for package `name` with data items, xz-compressed.
pub fn simple_deb(name: &str, items: &[Item]) -> Vec<u8> {
    deb(
        &format!("Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\n"),
        items,
        Comp::Xz,
    )
}
