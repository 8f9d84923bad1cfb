#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where imagegen bakes the record (read-only at run time).
pub const RECORD_PATH: &str = "/usr/lib/kubeboot/kubernetes.toml";

/// The reason imagegen records for an image built with
/// `--without-kubernetes` (see [`KubernetesRecord::absent`]).
pub const WITHOUT_KUBERNETES_REASON: &str = "built with --without-kubernetes";

/// The comment line the rendered file starts with.
const HEADER: &str = "# Written by imagegen: which Kubernetes components this image carries.\n";

/// Errors reading or checking a record. Each names the file.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The file exists but could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of this schema (unknown keys included).
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

/// The record: whether the Kubernetes components are in the image, and what
/// else imagegen baked for them. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRecord {
    /// Whether kubelet, kubeadm and kubectl are in the image (true when
    /// every declared component was installed).
    pub present: bool,
    /// The Kubernetes version, for example `v1.31.4` (required when
    /// `present = true`; kubeadm's `kubernetesVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the components are absent (required when `present = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The baked OCI archive of control-plane images, imported into
    /// containerd before kubeadm runs (air-gapped bring-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_archive: Option<String>,
    /// The baked CNI manifest, applied after init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_manifest: Option<String>,
    /// The pod CIDR as written in the CNI manifest as shipped (for example
    /// flannel's `10.244.0.0/16`); the agent replaces it with the cluster's
    /// pod subnet when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_pod_cidr: Option<String>,
    /// The installed upstream components (`[[components]]`). Absent from
    /// the TOML file when empty; always present in `manifest.json`.
    #[serde(default)]
    pub components: Vec<InstalledComponent>,
}

/// One installed upstream component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledComponent {
    /// Name (`kubelet`).
    pub name: String,
    /// Path in the image.
    pub path: String,
    /// SHA-256 of the installed file (hex).
    pub sha256: String,
}

/// What a record means for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
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
    /// Kubernetes is not in the image: the agent's kube phase is skipped,
    /// for this reason.
    Skip {
        /// Shown in `agent status`.
        reason: String,
    },
}

impl KubernetesRecord {
    /// The record of an image built with `--without-kubernetes`:
    /// `present = false` with [`WITHOUT_KUBERNETES_REASON`].
    pub fn absent(version: Option<String>) -> Self {
        KubernetesRecord {
            present: false,
            version,
            reason: Some(WITHOUT_KUBERNETES_REASON.to_owned()),
            images_archive: None,
            cni_manifest: None,
            cni_pod_cidr: None,
            components: Vec::new(),
        }
    }

    /// Parses the file's text; `path` names it in errors.
    pub fn from_toml(path: &str, text: &str) -> Result<Self, RecordError> {
        toml::from_str(text).map_err(|e| RecordError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Renders the file: a header comment, the keys that are set in field
    /// order, then one `[[components]]` table per component. The bytes are
    /// part of the image, so this layout does not change.
    pub fn to_toml(&self) -> String {
        let mut s = String::from(HEADER);
        let _ = writeln!(s, "present = {}", self.present);
        for (key, value) in [
            ("version", &self.version),
            ("reason", &self.reason),
            ("images_archive", &self.images_archive),
            ("cni_manifest", &self.cni_manifest),
            ("cni_pod_cidr", &self.cni_pod_cidr),
        ] {
            if let Some(v) = value {
                let _ = writeln!(s, "{key} = {}", toml_str(v));
            }
        }
        for c in &self.components {
            let _ = write!(
                s,
                "\n[[components]]\nname = {}\npath = {}\nsha256 = {}\n",
                toml_str(&c.name),
                toml_str(&c.path),
                toml_str(&c.sha256)
            );
        }
        s
    }

    /// The decision: present with a version, or skipped with the reason;
    /// `path` names the file in errors.
    pub fn verdict(&self, path: &str) -> Result<Verdict, RecordError> {
        let invalid = |message: &str| RecordError::Invalid {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        match (self.present, &self.version, &self.reason) {
            (true, Some(v), _) if !v.is_empty() => Ok(Verdict::Present {
                version: v.clone(),
                cni_manifest: self.cni_manifest.clone(),
                cni_pod_cidr: self.cni_pod_cidr.clone(),
                images_archive: self.images_archive.clone(),
            }),
            (true, _, _) => Err(invalid("present = true needs version = \"v1.x.y\"")),
            (false, _, Some(r)) if !r.trim().is_empty() => Ok(Verdict::Skip { reason: r.clone() }),
            (false, _, _) => Err(invalid("present = false needs a reason")),
        }
    }
}

/// Reads and parses the record at `path`: `None` when there is no file
/// (what that means is the reader's choice).
pub fn read(path: &Path) -> Result<Option<KubernetesRecord>, RecordError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => KubernetesRecord::from_toml(&shown, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RecordError::Read {
            path: shown,
            source,
        }),
    }
}

/// A TOML basic string (quotes and escapes `value`).
fn toml_str(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> KubernetesRecord {
        KubernetesRecord {
            present: true,
            version: Some("v1.31.4".into()),
            reason: None,
            images_archive: Some("/usr/lib/kubeboot/images.oci.tar".into()),
            cni_manifest: Some("/usr/lib/kubeboot/cni/flannel.yaml".into()),
            cni_pod_cidr: Some("10.244.0.0/16".into()),
            components: vec![
                InstalledComponent {
                    name: "kubelet".into(),
                    path: "/usr/bin/kubelet".into(),
                    sha256: "ab".repeat(32),
                },
                InstalledComponent {
                    name: "a \"quoted\" \\ name".into(),
                    path: "/usr/bin/kubeadm".into(),
                    sha256: "cd".repeat(32),
                },
            ],
        }
    }

    /// The layout images already carry: a change here changes image bytes.
    #[test]
    fn renders_the_layout_images_carry() {
        let mut r = full();
        r.components.truncate(1);
        r.components[0].sha256 = "0c02".into();
        assert_eq!(
            r.to_toml(),
            "# Written by imagegen: which Kubernetes components this image carries.\n\
             present = true\n\
             version = \"v1.31.4\"\n\
             images_archive = \"/usr/lib/kubeboot/images.oci.tar\"\n\
             cni_manifest = \"/usr/lib/kubeboot/cni/flannel.yaml\"\n\
             cni_pod_cidr = \"10.244.0.0/16\"\n\
             \n\
             [[components]]\n\
             name = \"kubelet\"\n\
             path = \"/usr/bin/kubelet\"\n\
             sha256 = \"0c02\"\n"
        );
    }

    #[test]
    fn every_field_round_trips() {
        let r = full();
        assert_eq!(KubernetesRecord::from_toml("k", &r.to_toml()).unwrap(), r);
        let absent = KubernetesRecord::absent(Some("v1.30.4".into()));
        assert_eq!(
            KubernetesRecord::from_toml("k", &absent.to_toml()).unwrap(),
            absent
        );
    }

    #[test]
    fn optional_fields_may_be_missing_and_are_not_rendered() {
        let r =
            KubernetesRecord::from_toml("k", "present = true\nversion = \"v1.31.4\"\n").unwrap();
        assert_eq!(
            (
                &r.reason,
                &r.images_archive,
                &r.cni_manifest,
                &r.cni_pod_cidr
            ),
            (&None, &None, &None, &None)
        );
        assert!(r.components.is_empty());
        let text = r.to_toml();
        for key in [
            "reason",
            "images_archive",
            "cni_manifest",
            "cni_pod_cidr",
            "[[components]]",
        ] {
            assert!(!text.contains(key), "{key} in {text}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_and_key() {
        for (text, key) in [
            ("present = true\nversoin = \"v1\"\n", "versoin"),
            (
                "present = true\nversion = \"v1\"\n[[components]]\nname = \"k\"\n\
                 path = \"/k\"\nsha256 = \"00\"\nmode = 1\n",
                "mode",
            ),
        ] {
            let err = KubernetesRecord::from_toml(RECORD_PATH, text)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(RECORD_PATH), "{err}");
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn absent_with_reason_is_a_skip_and_without_one_is_invalid() {
        let absent = KubernetesRecord::absent(None);
        assert_eq!(
            absent.verdict("k").unwrap(),
            Verdict::Skip {
                reason: WITHOUT_KUBERNETES_REASON.into()
            }
        );
        let blank = KubernetesRecord {
            reason: Some("  ".into()),
            ..absent
        };
        let err = blank.verdict("k").unwrap_err();
        assert!(matches!(err, RecordError::Invalid { .. }), "{err}");
    }

    #[test]
    fn present_needs_a_version_and_carries_the_baked_files() {
        assert_eq!(
            full().verdict("k").unwrap(),
            Verdict::Present {
                version: "v1.31.4".into(),
                cni_manifest: Some("/usr/lib/kubeboot/cni/flannel.yaml".into()),
                cni_pod_cidr: Some("10.244.0.0/16".into()),
                images_archive: Some("/usr/lib/kubeboot/images.oci.tar".into()),
            }
        );
        let unversioned = KubernetesRecord {
            version: None,
            ..full()
        };
        assert!(matches!(
            unversioned.verdict("k"),
            Err(RecordError::Invalid { .. })
        ));
    }

    /// `manifest.json` embeds the record through serde: `components` is
    /// always there, unset options are not.
    #[test]
    fn serde_keeps_components_and_leaves_out_unset_options() {
        let v = toml::Value::try_from(KubernetesRecord::absent(None)).unwrap();
        let t = v.as_table().unwrap();
        let keys: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        for key in ["present", "reason", "components"] {
            assert!(t.contains_key(key), "{key}: {keys:?}");
        }
    }

    #[test]
    fn read_says_none_for_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubernetes.toml");
        assert!(read(&path).unwrap().is_none());
        std::fs::write(&path, full().to_toml()).unwrap();
        assert_eq!(read(&path).unwrap(), Some(full()));
        let err = read(dir.path()).unwrap_err();
        assert!(matches!(err, RecordError::Read { .. }), "{err}");
    }
}
