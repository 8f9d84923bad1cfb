//! The text formats read from packages: control files, sysusers.d, passwd
//! and group files, unit [Install] sections, .modinfo-bearing ELF files and
//! overlay sidecars. Errors are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = rootfs::deb::parse_control(&text);
    let _ = rootfs::effects::users::parse_sysusers("fuzz", &text);
    let _ = rootfs::effects::users::parse_passwd("fuzz", &text);
    let _ = rootfs::effects::users::parse_group("fuzz", &text);
    let _ = rootfs::effects::units::parse_install(&text);
    let _ = rootfs::overlay::parse_attrs(&text);
    let _ = rootfs::kernel::parse_modinfo(data);
    let _ = rootfs::kernel::parse_builtin(&text);
    for p in text.lines().take(8) {
        let _ = rootfs::tree::normalize(p);
        let _ = rootfs::tree::resolve_target("/a/b", p);
    }
});
