//! What the image says about its Kubernetes components:
//! `/usr/lib/kubeboot/kubernetes.toml`, written by imagegen, read here. The
//! file's schema is the `kubernetes-record` crate, which both share; this
//! module adds what the agent makes of it.
//!
//! An image built without Kubernetes (no components directory, or the
//! explicit "none" source) says `present = false` with a `reason`; the kube
//! phase then reports itself skipped with that reason instead of failing.

use std::path::Path;

/// The record's schema, shared with imagegen (the `kubernetes-record`
/// crate), under the names this crate has always used: the file
/// ([`ImageKubernetes`]), one installed component, what the record means
/// ([`ImageVerdict`]: present, or skipped with a reason), the errors
/// ([`ImageError`]) and where the file is ([`IMAGE_KUBERNETES_PATH`]).
pub use kubernetes_record::{
    InstalledComponent, KubernetesRecord as ImageKubernetes, RecordError as ImageError,
    Verdict as ImageVerdict, RECORD_PATH as IMAGE_KUBERNETES_PATH,
};

/// The CNI manifest's text for a cluster whose pod subnet is `pod_subnet`:
/// `None` when the manifest can be applied as shipped (no recorded CIDR, or
/// the same one), else the text with every occurrence of `shipped_cidr`
/// replaced by `pod_subnet`. Pure.
pub fn cni_manifest_for_cluster(
    text: &str,
    shipped_cidr: Option<&str>,
    pod_subnet: &str,
) -> Option<String> {
    match shipped_cidr {
        Some(c) if !c.is_empty() && c != pod_subnet => Some(text.replace(c, pod_subnet)),
        _ => None,
    }
}

/// Reads the manifest at `path` and decides. A missing file means an image
/// from before this manifest existed, built without Kubernetes: skipped,
/// and the reason says which file is missing.
pub fn read_verdict(path: &Path) -> Result<ImageVerdict, ImageError> {
    let shown = path.display().to_string();
    match kubernetes_record::read(path)? {
        Some(record) => record.verdict(&shown),
        None => Ok(ImageVerdict::Skip {
            reason: format!("the image has no {shown}: it was built without Kubernetes components"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_kubernetes_is_skipped_with_the_images_reason() {
        let m = ImageKubernetes::from_toml(
            "k.toml",
            "present = false\nreason = \"built with --kubernetes none\"\n",
        )
        .unwrap();
        assert_eq!(
            m.verdict("k.toml").unwrap(),
            ImageVerdict::Skip {
                reason: "built with --kubernetes none".into()
            }
        );
    }

    #[test]
    fn present_needs_version_and_absent_needs_reason() {
        let p = ImageKubernetes::from_toml("k.toml", "present = true\nversion = \"v1.31.4\"\n")
            .unwrap();
        assert_eq!(
            p.verdict("k.toml").unwrap(),
            ImageVerdict::Present {
                version: "v1.31.4".into(),
                cni_manifest: None,
                cni_pod_cidr: None,
                images_archive: None,
            }
        );
        let no_version = ImageKubernetes::from_toml("k.toml", "present = true\n").unwrap();
        assert!(matches!(
            no_version.verdict("k.toml"),
            Err(ImageError::Invalid { .. })
        ));
        let no_reason = ImageKubernetes::from_toml("k.toml", "present = false\n").unwrap();
        assert!(matches!(
            no_reason.verdict("k.toml"),
            Err(ImageError::Invalid { .. })
        ));
    }

    /// The record exactly as imagegen writes it (imagegen/src/bake.rs).
    #[test]
    fn reads_imagegens_record() {
        let present = "# Written by imagegen: which Kubernetes components this image carries.\n\
            present = true\nversion = \"v1.30.4\"\n\n[[components]]\nname = \"kubelet\"\n\
            path = \"/usr/bin/kubelet\"\nsha256 = \"0c02\"\n\n[[components]]\nname = \"kubeadm\"\n\
            path = \"/usr/bin/kubeadm\"\nsha256 = \"6c60\"\n";
        let m = ImageKubernetes::from_toml("k.toml", present).unwrap();
        assert_eq!(m.components.len(), 2);
        assert_eq!(m.components[1].path, "/usr/bin/kubeadm");
        assert!(matches!(
            m.verdict("k.toml").unwrap(),
            ImageVerdict::Present { .. }
        ));
        let absent = "# Written by imagegen: which Kubernetes components this image carries.\n\
            present = false\nversion = \"v1.30.4\"\nreason = \"built with --without-kubernetes\"\n";
        let m = ImageKubernetes::from_toml("k.toml", absent).unwrap();
        assert_eq!(
            m.verdict("k.toml").unwrap(),
            ImageVerdict::Skip {
                reason: "built with --without-kubernetes".into()
            }
        );
    }

    #[test]
    fn cni_pod_cidr_is_optional_and_rewrites_the_manifest() {
        let with = "present = true\nversion = \"v1.31.4\"\n\
            cni_manifest = \"/usr/lib/kubeboot/cni/flannel.yaml\"\n\
            cni_pod_cidr = \"10.244.0.0/16\"\n";
        let m = ImageKubernetes::from_toml("k.toml", with).unwrap();
        assert_eq!(m.cni_pod_cidr.as_deref(), Some("10.244.0.0/16"));
        assert_eq!(ImageKubernetes::from_toml("k", &m.to_toml()).unwrap(), m);
        match m.verdict("k.toml").unwrap() {
            ImageVerdict::Present { cni_pod_cidr, .. } => {
                assert_eq!(cni_pod_cidr.as_deref(), Some("10.244.0.0/16"))
            }
            other => panic!("{other:?}"),
        }
        // Records written before the field parse, without it.
        let without = "present = true\nversion = \"v1.31.4\"\n";
        let m = ImageKubernetes::from_toml("k.toml", without).unwrap();
        assert_eq!(m.cni_pod_cidr, None);
        assert!(!m.to_toml().contains("cni_pod_cidr"));
        let manifest = "net-conf.json: |\n  { \"Network\": \"10.244.0.0/16\" }\n";
        assert_eq!(
            cni_manifest_for_cluster(manifest, Some("10.244.0.0/16"), "10.32.0.0/16").as_deref(),
            Some("net-conf.json: |\n  { \"Network\": \"10.32.0.0/16\" }\n")
        );
        assert_eq!(
            cni_manifest_for_cluster(manifest, Some("10.244.0.0/16"), "10.244.0.0/16"),
            None
        );
        assert_eq!(
            cni_manifest_for_cluster(manifest, None, "10.32.0.0/16"),
            None
        );
    }

    #[test]
    fn unknown_key_is_refused_with_the_path() {
        let err = ImageKubernetes::from_toml(
            "/usr/lib/kubeboot/kubernetes.toml",
            "present = true\nversoin = \"v1\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/usr/lib/kubeboot/kubernetes.toml"),
            "{text}"
        );
        assert!(text.contains("versoin"), "{text}");
    }

    #[test]
    fn round_trips_and_missing_file_is_a_skip() {
        let m = ImageKubernetes {
            present: true,
            reason: None,
            version: Some("v1.31.4".into()),
            images_archive: Some("/usr/lib/kubeboot/images.oci.tar".into()),
            cni_manifest: None,
            cni_pod_cidr: None,
            components: vec![InstalledComponent {
                name: "kubeadm".into(),
                path: "/usr/bin/kubeadm".into(),
                sha256: "00".repeat(32),
            }],
        };
        assert_eq!(ImageKubernetes::from_toml("x", &m.to_toml()).unwrap(), m);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubernetes.toml");
        match read_verdict(&path).unwrap() {
            ImageVerdict::Skip { reason } => {
                assert!(reason.contains("kubernetes.toml"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, m.to_toml()).unwrap();
        assert!(matches!(
            read_verdict(&path).unwrap(),
            ImageVerdict::Present { .. }
        ));
    }
}
