//! What the image says about its Kubernetes components:
//! `/usr/lib/kubeboot/kubernetes.toml`, written by imagegen, read here.
//!
//! An image built without Kubernetes (no components directory, or the
//! explicit "none" source) says `present = false` with a `reason`; the kube
//! phase then reports itself skipped with that reason instead of failing.

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where imagegen writes the file (read-only at run time).
pub const IMAGE_KUBERNETES_PATH: &str = "/usr/lib/kubeboot/kubernetes.toml";

/// Errors reading the image's Kubernetes manifest.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The file exists but could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (line, column, key).
        message: String,
    },
    /// `present = true` without a version, or `present = false` without a
    /// reason.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The image's Kubernetes manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageKubernetes {
    /// Whether kubelet, kubeadm and kubectl are in the image.
    pub present: bool,
    /// Why they are not (required when `present = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The Kubernetes version the components are, for example `v1.31.4`
    /// (required when `present = true`; kubeadm's `kubernetesVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The OCI archive of control-plane images to import into containerd
    /// before kubeadm runs (air-gapped bring-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_archive: Option<String>,
    /// The CNI manifest baked into the image, applied after init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_manifest: Option<String>,
    /// The pod CIDR written in the CNI manifest as shipped (for example
    /// flannel's `10.244.0.0/16`). When set and different from the
    /// cluster's pod subnet, the agent applies a copy of the manifest with
    /// that string replaced ([`cni_manifest_for_cluster`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_pod_cidr: Option<String>,
    /// The installed upstream components (imagegen's `[[components]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<InstalledComponent>,
}

/// One installed upstream component, as imagegen records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledComponent {
    /// Name (`kubelet`).
    pub name: String,
    /// Path in the image.
    pub path: String,
    /// SHA-256 of the installed file.
    pub sha256: String,
}

/// What the manifest means for the kube phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageVerdict {
    /// Kubernetes is in the image, at this version.
    Present {
        /// `kubernetesVersion`.
        version: String,
        /// The CNI manifest to apply after init, if the image has one.
        cni_manifest: Option<String>,
        /// The pod CIDR written in that manifest, if recorded.
        cni_pod_cidr: Option<String>,
        /// The OCI archive of control-plane images to import first.
        images_archive: Option<String>,
    },
    /// The phase is skipped, for this reason.
    Skip {
        /// Shown in `agent status`.
        reason: String,
    },
}

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

impl ImageKubernetes {
    /// Parses the file's text; `path` names it in errors.
    pub fn from_toml(path: &str, text: &str) -> Result<Self, ImageError> {
        toml::from_str(text).map_err(|e| ImageError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Renders the file (what imagegen writes).
    pub fn to_toml(&self) -> String {
        // Plain data with string keys always serialises.
        toml::to_string(self).unwrap_or_default()
    }

    /// The decision: present with a version, or skipped with the reason.
    pub fn verdict(&self, path: &str) -> Result<ImageVerdict, ImageError> {
        let invalid = |message: &str| ImageError::Invalid {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        match (self.present, &self.version, &self.reason) {
            (true, Some(v), _) if !v.is_empty() => Ok(ImageVerdict::Present {
                version: v.clone(),
                cni_manifest: self.cni_manifest.clone(),
                cni_pod_cidr: self.cni_pod_cidr.clone(),
                images_archive: self.images_archive.clone(),
            }),
            (true, _, _) => Err(invalid("present = true needs version = \"v1.x.y\"")),
            (false, _, Some(r)) if !r.trim().is_empty() => {
                Ok(ImageVerdict::Skip { reason: r.clone() })
            }
            (false, _, _) => Err(invalid("present = false needs a reason")),
        }
    }
}

/// Reads the manifest at `path` and decides. A missing file means an image
/// from before this manifest existed, built without Kubernetes: skipped,
/// and the reason says which file is missing.
pub fn read_verdict(path: &Path) -> Result<ImageVerdict, ImageError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => ImageKubernetes::from_toml(&shown, &text)?.verdict(&shown),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ImageVerdict::Skip {
            reason: format!("the image has no {shown}: it was built without Kubernetes components"),
        }),
        Err(source) => Err(ImageError::Read {
            path: shown,
            source,
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
