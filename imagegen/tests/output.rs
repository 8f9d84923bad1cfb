//! The output directory on real mounts: `--out` at a mount point (staged
//! inside it, replaced whole, nothing complete-looking left elsewhere) and a
//! full disk (the error names the file once, the partial output is gone).
//!
//! Each test re-runs itself inside a private mount namespace (`unshare
//! --mount`) and mounts small tmpfs file systems there, so nothing is
//! mounted on the host. Needs root, like `make test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use imagegen::output::{is_mount_point, OutputError, Staging};

const IN_NAMESPACE: &str = "IMAGEGEN_OUTPUT_TEST_IN_NAMESPACE";

/// Runs the calling test `name` again in a private mount namespace; returns
/// true there (the caller then runs its body), false in the parent after the
/// child passed.
fn in_private_mount_namespace(name: &str) -> bool {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return true;
    }
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .output()
        .expect("run unshare (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} in a mount namespace:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
    false
}

fn mount_tmpfs(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs on {}", dir.display());
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn out_at_a_mount_point_is_staged_inside_and_replaced_whole() {
    if !in_private_mount_namespace("out_at_a_mount_point_is_staged_inside_and_replaced_whole") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("mnt");
    mount_tmpfs(&out, "4m");
    assert!(is_mount_point(&out));
    std::fs::create_dir(out.join("lost+found")).unwrap();
    std::fs::write(out.join("stale"), b"old").unwrap();
    std::fs::write(out.join("manifest.json"), b"{\"old\":true}").unwrap();

    // A build that fails (dropped before commit) leaves the old image as it
    // was and nothing staged, inside or beside the mount point.
    {
        let s = Staging::new(&out).unwrap();
        assert!(
            s.path("vmlinuz").starts_with(&out),
            "staged on the mounted fs"
        );
        s.write("vmlinuz", b"new kernel").unwrap();
        s.write("manifest.json", b"{}").unwrap();
    }
    assert_eq!(names(&out), ["lost+found", "manifest.json", "stale"]);
    assert_eq!(names(root.path()), ["mnt"]);

    let s = Staging::new(&out).unwrap();
    s.write("vmlinuz", b"new kernel").unwrap();
    s.write("initramfs.img", b"new initramfs").unwrap();
    s.write("manifest.json", b"{}").unwrap();
    assert_eq!(s.commit().unwrap(), out);
    assert_eq!(
        names(&out),
        ["initramfs.img", "lost+found", "manifest.json", "vmlinuz"]
    );
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), b"{}");
    assert_eq!(
        names(root.path()),
        ["mnt"],
        "nothing left beside the mount point"
    );
}

#[test]
fn full_disk_names_the_output_file_once_and_leaves_nothing() {
    if !in_private_mount_namespace("full_disk_names_the_output_file_once_and_leaves_nothing") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let fs = root.path().join("small");
    mount_tmpfs(&fs, "64k");
    let target = fs.join("master");
    let staged: PathBuf;
    let err = {
        let s = Staging::new(&target).unwrap();
        staged = s.path("initramfs.img");
        s.write_with("initramfs.img", |w| {
            std::io::Write::write_all(w, &vec![7u8; 1 << 20])
        })
        .unwrap_err()
    };
    assert!(matches!(err, OutputError::Write { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "writing {} (staged as {}): No space left on device (os error 28)",
            target.join("initramfs.img").display(),
            staged.display()
        )
    );
    let text = imagegen::cli::error_text(&anyhow::Error::new(err).context("building master"));
    assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
    assert!(text.starts_with("building master: writing "), "{text}");
    assert!(
        names(&fs).is_empty(),
        "partial output left: {:?}",
        names(&fs)
    );
}
