//! Unpack the given .deb files into one tree and write an initramfs, printing
//! timings and sizes: `cargo run --release -p rootfs --example pack -- OUT LEVEL a.deb b.deb ...`
//! With `ROOTFS_MODULES=a,b,c` the kernel is taken out, keeping those modules
//! (`ROOTFS_VMLINUZ_OUT=path` writes it); `ROOTFS_INIT=script` adds it as
//! `/init` plus `/dev/console`, for a QEMU smoke boot.
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, level, debs @ ..] = &args[..] else {
        return Err("usage: pack OUT LEVEL DEB...".into());
    };
    let mut tree = rootfs::Tree::new();
    rootfs::effects::merge_usr(&mut tree)?;
    let t0 = Instant::now();
    for d in debs {
        let info =
            tree.unpack_deb_file(std::path::Path::new(d), &rootfs::UnpackOptions::default())?;
        println!(
            "{} {} entries={} bytes={}",
            info.package, info.version, info.entries, info.content_bytes
        );
    }
    println!(
        "unpack: {:?}, {} entries, {} bytes",
        t0.elapsed(),
        tree.len(),
        tree.total_size()
    );
    if let Ok(mods) = std::env::var("ROOTFS_MODULES") {
        let t = Instant::now();
        let mods: Vec<String> = mods.split(',').map(String::from).collect();
        let k = rootfs::kernel::take_kernel(&mut tree, &mods)?;
        if let Ok(out) = std::env::var("ROOTFS_VMLINUZ_OUT") {
            std::fs::write(out, &k.vmlinuz)?;
        }
        println!(
            "kernel {}: vmlinuz {} bytes, kept {:?}, builtin {:?} in {:?}; tree now {} entries, {} bytes",
            k.version,
            k.vmlinuz.len(),
            k.kept_modules,
            k.builtin,
            t.elapsed(),
            tree.len(),
            tree.total_size()
        );
    }
    if let Ok(init) = std::env::var("ROOTFS_INIT") {
        tree.add_file("/init", std::fs::read(init)?, 0o755, 0, 0)?;
        rootfs::effects::initramfs_basics(&mut tree)?;
    }
    let t1 = Instant::now();
    let f = std::io::BufWriter::new(std::fs::File::create(out)?);
    let stats = rootfs::cpio::write_initramfs(&tree, 1_700_000_000, level.parse()?, f)?;
    println!("write: {:?} {stats:?}", t1.elapsed());
    Ok(())
}
