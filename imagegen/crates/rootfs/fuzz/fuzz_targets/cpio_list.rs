//! Arbitrary bytes as an initramfs (zstd or plain newc): listing returns an
//! error or entries, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rootfs::cpio::list(data);
});
