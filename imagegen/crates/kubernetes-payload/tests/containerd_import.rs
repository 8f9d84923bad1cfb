//! The baked images archive imports into a real containerd (started here
//! with its own root, state and socket) and lists the pinned image.

mod common;

use common::Containerd;
use kubernetes_payload::images;
use profile::ImageRef;

#[test]
fn merged_archive_imports_into_containerd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("images")).unwrap();
    let (tar, digest) = images::tiny_archive("registry.k8s.io/pause:3.9", 1).unwrap();
    std::fs::write(d.join("images/pause.tar"), tar).unwrap();
    let pinned = [ImageRef {
        name: "registry.k8s.io/pause:3.9".into(),
        digest: digest.clone(),
    }];
    let merged = images::collect(d, &pinned, 1704067200).unwrap();
    let archive = d.join("images.oci.tar");
    std::fs::write(&archive, merged).unwrap();

    let containerd = Containerd::start(d);
    containerd.import_and_expect(&archive, &[("registry.k8s.io/pause:3.9", digest.as_str())]);
}
