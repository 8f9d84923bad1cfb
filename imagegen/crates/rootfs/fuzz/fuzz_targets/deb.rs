//! Arbitrary bytes as a .deb: the ar, tar and decompression paths must
//! return errors, never panic, and never leave a half-unpacked tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootfs::{Tree, UnpackOptions};

fuzz_target!(|data: &[u8]| {
    let mut tree = Tree::new();
    rootfs::effects::merge_usr(&mut tree).expect("merge_usr on an empty tree");
    let before = tree.clone();
    let opts = UnpackOptions {
        merged_usr: true,
        // keep decompression bombs small under the fuzzer's memory limit
        max_unpacked_bytes: 16 << 20,
    };
    match tree.unpack_deb(data, &opts) {
        Ok(_) => {
            // whatever was unpacked must be writable as an initramfs
            let mut out = Vec::new();
            rootfs::cpio::write_cpio(&tree, 0, &mut out).expect("writing an unpacked tree");
            let listed = rootfs::cpio::list(&out[..]).expect("listing what we wrote");
            assert_eq!(listed.len(), tree.len() - 1);
        }
        Err(_) => assert_eq!(tree, before, "a failed unpack changed the tree"),
    }
    let _ = rootfs::deb::read_control(data);
});
