//! Kernel extraction and module selection on fake modules: minimal ELF
//! relocatable objects with a `.modinfo` section, exported symbol names in
//! `__ksymtab_strings` and undefined symbols for what they use, so the
//! host's real `depmod` (Debian package `kmod`) computes the same
//! dependencies the `depends=` fields declare.
use std::io::Write;

use object::write::{Object, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};
use rootfs::kernel::{take_kernel, KernelError};
use rootfs::{effects, EntryKind, Tree};

const VERSION: &str = "6.1.0-99-test";

fn fake_module(
    name: &str,
    depends: &[&str],
    aliases: &[&str],
    exports: &[&str],
    imports: &[&str],
) -> Vec<u8> {
    fake_module_extra(name, depends, aliases, exports, imports, "")
}

fn fake_module_extra(
    name: &str,
    depends: &[&str],
    aliases: &[&str],
    exports: &[&str],
    imports: &[&str],
    extra_modinfo: &str,
) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let mut modinfo = format!(
        "name={name}\0depends={}\0vermagic={VERSION} SMP mod_unload\0",
        depends.join(",")
    );
    for a in aliases {
        modinfo.push_str(&format!("alias={a}\0"));
    }
    modinfo.push_str(extra_modinfo);
    let sec = obj.add_section(vec![], b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(sec, modinfo.as_bytes(), 1);
    if !exports.is_empty() {
        let text = obj.add_section(vec![], b".text".to_vec(), SectionKind::Text);
        let strings: String = exports.iter().map(|e| format!("{e}\0")).collect();
        let ks = obj.add_section(
            vec![],
            b"__ksymtab_strings".to_vec(),
            SectionKind::ReadOnlyData,
        );
        obj.append_section_data(ks, strings.as_bytes(), 1);
        for (i, e) in exports.iter().enumerate() {
            let off = obj.append_section_data(text, &[0xc3], 1);
            let _ = i;
            obj.add_symbol(Symbol {
                name: e.as_bytes().to_vec(),
                value: off,
                size: 1,
                kind: SymbolKind::Text,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(text),
                flags: SymbolFlags::None,
            });
        }
    }
    for i in imports {
        obj.add_symbol(Symbol {
            name: i.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
    }
    obj.write().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn kernel_tree() -> Tree {
    let mut t = Tree::new();
    effects::merge_usr(&mut t).unwrap();
    t.add_file(
        &format!("/boot/vmlinuz-{VERSION}"),
        b"BZIMAGE".to_vec(),
        0o644,
        0,
        0,
    )
    .unwrap();
    t.add_file(
        &format!("/boot/System.map-{VERSION}"),
        b"dummy".to_vec(),
        0o644,
        0,
        0,
    )
    .unwrap();
    t.add_file(
        &format!("/boot/config-{VERSION}"),
        b"CONFIG_X=y".to_vec(),
        0o644,
        0,
        0,
    )
    .unwrap();
    let m = format!("/lib/modules/{VERSION}");
    let add = |t: &mut Tree, rel: &str, data: Vec<u8>| {
        t.add_file(&format!("{m}/{rel}"), data, 0o644, 0, 0)
            .unwrap();
    };
    add(
        &mut t,
        "kernel/net/llc/llc.ko",
        fake_module("llc", &[], &[], &["llc_add_pack"], &[]),
    );
    add(
        &mut t,
        "kernel/net/802/stp.ko",
        fake_module(
            "stp",
            &["llc"],
            &[],
            &["stp_proto_register"],
            &["llc_add_pack"],
        ),
    );
    add(
        &mut t,
        "kernel/net/bridge/bridge.ko",
        fake_module(
            "bridge",
            &["stp", "llc"],
            &["rtnl-link-bridge"],
            &["br_dev_queue_push_xmit"],
            &["stp_proto_register", "llc_add_pack"],
        ),
    );
    add(
        &mut t,
        "kernel/net/bridge/br_netfilter.ko",
        fake_module(
            "br_netfilter",
            &["bridge"],
            &["net-pf-7-proto-0"],
            &[],
            &["br_dev_queue_push_xmit"],
        ),
    );
    add(
        &mut t,
        "kernel/drivers/net/virtio_net.ko.xz",
        xz(&fake_module(
            "virtio_net",
            &[],
            &["virtio:d00000001v*"],
            &[],
            &[],
        )),
    );
    // a soft dependency by alias, as ext4's `softdep=pre: crypto-crc32c`
    add(
        &mut t,
        "kernel/fs/fakefs/fakefs.ko",
        fake_module_extra(
            "fakefs",
            &[],
            &["fs-fakefs"],
            &[],
            &[],
            "softdep=pre: crypto-fakecrc\0",
        ),
    );
    add(
        &mut t,
        "kernel/crypto/fakecrc_generic.ko",
        fake_module(
            "fakecrc_generic",
            &[],
            &["crypto-fakecrc", "fakecrc"],
            &[],
            &[],
        ),
    );
    add(
        &mut t,
        "kernel/drivers/unused/unused.ko",
        fake_module("unused", &[], &["pci:v0000AAAA*"], &[], &[]),
    );
    add(
        &mut t,
        "modules.order",
        b"kernel/net/llc/llc.ko\nkernel/net/802/stp.ko\nkernel/net/bridge/bridge.ko\nkernel/net/bridge/br_netfilter.ko\nkernel/drivers/net/virtio_net.ko\nkernel/drivers/unused/unused.ko\n".to_vec(),
    );
    add(
        &mut t,
        "modules.builtin",
        b"kernel/fs/ext4/ext4.ko\nkernel/drivers/virtio/virtio_pci.ko\n".to_vec(),
    );
    add(
        &mut t,
        "modules.builtin.modinfo",
        b"ext4.description=x\0".to_vec(),
    );
    add(&mut t, "modules.dep", b"stale\n".to_vec());
    t
}

fn text(t: &Tree, path: &str) -> String {
    match &t.get(path).unwrap_or_else(|| panic!("{path} missing")).kind {
        EntryKind::File(c) => String::from_utf8_lossy(c).into_owned(),
        k => panic!("{path} is a {}", k.name()),
    }
}

#[test]
fn keeps_requested_modules_and_their_dependencies() {
    let mut t = kernel_tree();
    let req: Vec<String> = ["br_netfilter", "virtio-net", "ext4", "virtio_pci", "fakefs"]
        .map(String::from)
        .to_vec();
    let k = take_kernel(&mut t, &req).unwrap();
    assert_eq!(k.version, VERSION);
    assert_eq!(k.vmlinuz, b"BZIMAGE");
    assert_eq!(
        k.kept_modules,
        [
            "br_netfilter",
            "bridge",
            "fakecrc_generic",
            "fakefs",
            "llc",
            "stp",
            "virtio_net"
        ]
    );
    assert_eq!(k.builtin, ["ext4", "virtio_pci"]);

    assert!(t.get(&format!("/boot/vmlinuz-{VERSION}")).is_none());
    assert!(t.get(&format!("/boot/System.map-{VERSION}")).is_none());
    assert!(t.get(&format!("/boot/config-{VERSION}")).is_some());
    let m = format!("/usr/lib/modules/{VERSION}");
    assert!(
        t.get(&format!("{m}/kernel/drivers/unused")).is_none(),
        "emptied directory pruned"
    );
    assert!(t
        .get(&format!("{m}/kernel/drivers/net/virtio_net.ko.xz"))
        .is_some());

    let dep = text(&t, &format!("{m}/modules.dep"));
    let lines: Vec<&str> = dep.lines().collect();
    assert_eq!(
        lines,
        [
            "kernel/net/llc/llc.ko:",
            "kernel/net/802/stp.ko: kernel/net/llc/llc.ko",
            "kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko",
            "kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko kernel/net/802/stp.ko kernel/net/llc/llc.ko",
            "kernel/drivers/net/virtio_net.ko.xz:",
            "kernel/fs/fakefs/fakefs.ko:",
            "kernel/crypto/fakecrc_generic.ko:",
        ],
        "modules.dep:\n{dep}"
    );
    let alias = text(&t, &format!("{m}/modules.alias"));
    assert!(
        alias.contains("alias virtio:d00000001v* virtio_net\n"),
        "{alias}"
    );
    assert!(
        alias.contains("alias net_pf_7_proto_0 br_netfilter\n")
            || alias.contains("alias net-pf-7-proto-0 br_netfilter\n"),
        "{alias}"
    );
    assert!(!alias.contains("unused"), "{alias}");
    let softdep = text(&t, &format!("{m}/modules.softdep"));
    assert!(
        softdep.contains("softdep fakefs pre: crypto-fakecrc"),
        "{softdep}"
    );
    for bin in [
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.symbols.bin",
        "modules.builtin.bin",
    ] {
        assert!(
            t.get(&format!("{m}/{bin}")).is_some_and(|e| e.size() > 0),
            "{bin} missing"
        );
    }
    assert_eq!(
        text(&t, &format!("{m}/modules.order")),
        "kernel/net/llc/llc.ko\nkernel/net/802/stp.ko\nkernel/net/bridge/bridge.ko\nkernel/net/bridge/br_netfilter.ko\nkernel/drivers/net/virtio_net.ko\n"
    );
    assert_eq!(
        text(&t, &format!("{m}/modules.builtin.modinfo")),
        "ext4.description=x\0"
    );

    // deterministic: a second run from scratch gives the same tree
    let mut again = kernel_tree();
    take_kernel(&mut again, &req).unwrap();
    assert_eq!(again, t);
}

#[test]
fn unknown_module_names_the_nearest_and_leaves_tree() {
    let mut t = kernel_tree();
    let before = t.clone();
    let err = take_kernel(&mut t, &["virtio_nett".into()]).unwrap_err();
    match &err {
        KernelError::UnknownModule { name, nearest, .. } => {
            assert_eq!(name, "virtio_nett");
            assert_eq!(nearest[0], "virtio_net");
        }
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("virtio_net"), "{err}");
    assert_eq!(t, before);
}

#[test]
fn no_kernel_or_two_kernels() {
    let mut t = Tree::new();
    assert!(matches!(
        take_kernel(&mut t, &[]),
        Err(KernelError::NoKernel)
    ));
    let mut t = kernel_tree();
    t.add_file("/boot/vmlinuz-6.1.0-98-test", b"x".to_vec(), 0o644, 0, 0)
        .unwrap();
    assert!(matches!(
        take_kernel(&mut t, &[]),
        Err(KernelError::SeveralKernels { .. })
    ));
}
