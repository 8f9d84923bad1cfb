#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
mod load;
mod names;
mod profile;
mod spec;

pub use error::{locate_key, Location, ProfileError};
pub use load::{load, MAX_EXTENDS_DEPTH, MAX_PROFILE_BYTES};
pub use names::{is_registry_host, is_sha256, ImageRef};
pub use profile::{
    Archive, ChainFile, Cni, Component, Profile, DEFAULT_ARCHITECTURE, DEFAULT_CMDLINE,
    DEFAULT_KERNEL_PACKAGE, DEFAULT_KEYRING, DEFAULT_SOURCE_DATE_EPOCH, DEFAULT_SUITE,
};
pub use spec::{
    ArchiveSpec, CniSpec, ComponentSpec, KernelSpec, KubernetesSpec, PackagesSpec, ProfileSpec,
    SysctlValue, SystemSpec, UserSpec, KUBERNETES_REPLACEABLE,
};

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use cluster_config::Role;

    use super::*;
    use crate::error::line_col;

    fn parse(text: &str) -> Result<ProfileSpec, ProfileError> {
        ProfileSpec::parse(Path::new("p.toml"), text)
    }

    fn chain(files: &[(&str, &str)]) -> Vec<ChainFile> {
        files
            .iter()
            .map(|(name, text)| ChainFile {
                path: PathBuf::from(name),
                text: text.to_string(),
                spec: ProfileSpec::parse(Path::new(name), text).unwrap(),
            })
            .collect()
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse("name = \"x\"\n[packages\ninclude = []\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProfileError::Syntax { .. }), "{text}");
        assert!(text.starts_with("p.toml:2:"), "{text}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[kernel]\npackage = \"linux-image-amd64\"\nmodles = [\"virtio\"]\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProfileError::Schema { .. }), "{text}");
        assert!(text.starts_with("p.toml:3:"), "{text}");
        assert!(text.contains("modles"), "{text}");
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let err = parse("[packages]\ninclude = \"systemd\"\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProfileError::Schema { .. }), "{text}");
        assert!(text.starts_with("p.toml:2:"), "{text}");
        assert!(text.contains("key `packages.include`"), "{text}");
    }

    #[test]
    fn wrong_type_in_cluster_table_names_key() {
        let err = parse("[cluster]\nrole = \"master\"\nmasters = \"three\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.toml:3:"), "{text}");
        assert!(text.contains("cluster.masters"), "{text}");
    }

    #[test]
    fn bad_sha256_names_component_key() {
        let err = parse(
            "[kubernetes]\nversion = \"v1.30.4\"\n[kubernetes.components.kubelet]\n\
             url = \"https://example.invalid/kubelet\"\nsha256 = \"abc\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProfileError::Invalid { .. }), "{text}");
        assert!(text.starts_with("p.toml:5:"), "{text}");
        assert!(
            text.contains("kubernetes.components.kubelet.sha256"),
            "{text}"
        );
    }

    #[test]
    fn bad_package_name_is_refused() {
        let err = parse("[packages]\ninclude = [\"systemd\", \"Bad_Name\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.toml:2:"), "{text}");
        assert!(text.contains("Bad_Name"), "{text}");
    }

    #[test]
    fn relative_drop_path_is_refused() {
        let err = parse("[packages]\ndrop_paths = [\"usr/share/man\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.toml:2:"), "{text}");
        assert!(text.contains("packages.drop_paths"), "{text}");
    }

    #[test]
    fn baked_secret_is_refused() {
        let err = parse("[cluster]\nsecret = \"0123456789abcdef0123\"\n").unwrap_err();
        assert!(err.to_string().contains("cluster.secret"), "{err}");
    }

    #[test]
    fn merge_appends_lists_and_overrides_tables() {
        let c = chain(&[
            (
                "base.toml",
                "[packages]\ninclude = [\"systemd\", \"runc\"]\n[kernel]\nmodules = [\"virtio_blk\"]\n\
                 [system.sysctls]\n\"net.ipv4.ip_forward\" = 1\n\"vm.swappiness\" = 10\n\
                 [cluster]\nname = \"c1\"\nrole = \"worker\"\n[cluster.vrrp]\npriority = 50\n",
            ),
            (
                "master.toml",
                "extends = \"base.toml\"\n[packages]\ninclude = [\"etcd-server\", \"runc\"]\n\
                 [kernel]\nmodules = [\"overlay\"]\n[system.sysctls]\n\"vm.swappiness\" = 0\n\
                 [cluster]\nrole = \"master\"\n",
            ),
        ]);
        let p = Profile::from_chain(&c).unwrap();
        assert_eq!(p.name, "master");
        assert_eq!(
            p.include,
            ["systemd", "runc", "etcd-server", DEFAULT_KERNEL_PACKAGE]
        );
        assert_eq!(p.modules, ["virtio_blk", "overlay"]);
        assert_eq!(
            p.system.sysctls.get("vm.swappiness"),
            Some(&SysctlValue::Int(0))
        );
        assert_eq!(
            p.system.sysctls.get("net.ipv4.ip_forward"),
            Some(&SysctlValue::Int(1))
        );
        assert_eq!(p.role, Role::Master);
        assert_eq!(p.cluster.name.as_deref(), Some("c1"));
        assert_eq!(p.cluster.vrrp.priority, Some(50));
        assert_eq!(p.archive.suite, DEFAULT_SUITE);
    }

    #[test]
    fn missing_role_points_at_cluster_role() {
        let c = chain(&[("w.toml", "[cluster]\nname = \"c1\"\n")]);
        let err = Profile::from_chain(&c).unwrap_err();
        assert!(err.to_string().contains("cluster.role"), "{err}");
    }

    #[test]
    fn invalid_cluster_value_names_file_and_line() {
        let c = chain(&[
            ("base.toml", "[cluster]\nrole = \"master\"\n"),
            (
                "m.toml",
                "extends = \"base.toml\"\n[cluster]\nmasters = 4\n",
            ),
        ]);
        let err = Profile::from_chain(&c).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("m.toml:3:"), "{text}");
        assert!(text.contains("cluster.masters"), "{text}");
    }

    #[test]
    fn component_without_sha_is_refused() {
        let c = chain(&[(
            "m.toml",
            "[kubernetes]\nversion = \"v1\"\n[kubernetes.components.kubelet]\n\
             url = \"https://example.invalid/kubelet\"\n[cluster]\nrole = \"master\"\n",
        )]);
        let err = Profile::from_chain(&c).unwrap_err();
        assert!(err.to_string().contains("no sha256"), "{err}");
    }

    #[test]
    fn image_without_digest_is_refused_with_the_key() {
        let err = parse("[kubernetes]\nimages = [\"registry.k8s.io/pause:3.9\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kubernetes.images"), "{err}");
        assert!(err.contains("not pinned by digest"), "{err}");
    }

    #[test]
    fn images_append_and_cni_merges_field_by_field() {
        let d1 = "a".repeat(64);
        let d2 = "b".repeat(64);
        let parent = format!(
            "[kubernetes]\nimages = [\"r/pause:3.9@sha256:{d1}\"]\n\
             [kubernetes.cni]\nname = \"flannel\"\nurl = \"https://example.invalid/f.yml\"\n\
             sha256 = \"{d1}\"\npod_cidr = \"10.244.0.0/16\"\n"
        );
        let child = format!(
            "extends = \"p.toml\"\n[kubernetes]\nimages = [\"r/dns:v1@sha256:{d2}\"]\n\
             [kubernetes.cni]\nsha256 = \"{d2}\"\n[cluster]\nrole = \"master\"\n"
        );
        let p = Profile::from_chain(&chain(&[("p.toml", &parent), ("m.toml", &child)])).unwrap();
        let names: Vec<&str> = p.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["r/pause:3.9", "r/dns:v1"]);
        assert_eq!(p.images[1].digest, format!("sha256:{d2}"));
        let cni = p.cni.unwrap();
        assert_eq!(cni.name, "flannel");
        assert_eq!(cni.sha256, d2);
        assert_eq!(cni.pod_cidr.as_deref(), Some("10.244.0.0/16"));
    }

    #[test]
    fn replace_swaps_the_parents_pins_instead_of_merging() {
        let d = |c: char| c.to_string().repeat(64);
        let base = format!(
            "[kubernetes]\nversion = \"v1.30.4\"\n\
             images = [\"r/apiserver:v1.30.4@sha256:{}\", \"r/pause:3.9@sha256:{}\"]\n\
             [kubernetes.registry_mirrors]\n\"r\" = \"http://127.0.0.1:5000\"\n\
             [kubernetes.components.kubelet]\nurl = \"https://example.invalid/v1.30.4/kubelet\"\n\
             sha256 = \"{}\"\n\
             [kubernetes.components.crictl]\nurl = \"https://example.invalid/crictl.tar.gz\"\n\
             sha256 = \"{}\"\nunpack_to = \"/usr/bin\"\n\
             [kubernetes.cni]\nname = \"flannel\"\nurl = \"https://example.invalid/f.yml\"\n\
             sha256 = \"{}\"\n",
            d('a'),
            d('b'),
            d('c'),
            d('d'),
            d('e')
        );
        let derived = format!(
            "extends = \"base.toml\"\n[kubernetes]\nversion = \"v1.24.0\"\n\
             replace = [\"components\", \"images\"]\n\
             images = [\"r/apiserver:v1.24.0@sha256:{}\"]\n\
             [kubernetes.components.kubelet]\nurl = \"https://example.invalid/v1.24.0/kubelet\"\n\
             sha256 = \"{}\"\n[cluster]\nrole = \"master\"\n",
            d('1'),
            d('2')
        );
        let p = Profile::from_chain(&chain(&[("base.toml", &base), ("m.toml", &derived)])).unwrap();
        assert_eq!(p.kubernetes_version.as_deref(), Some("v1.24.0"));
        let images: Vec<String> = p
            .images
            .iter()
            .map(|i| format!("{}@{}", i.name, i.digest))
            .collect();
        assert_eq!(images, [format!("r/apiserver:v1.24.0@sha256:{}", d('1'))]);
        assert_eq!(p.components.len(), 1, "crictl is gone: {:?}", p.components);
        assert_eq!(p.components[0].name, "kubelet");
        assert_eq!(
            p.components[0].url,
            "https://example.invalid/v1.24.0/kubelet"
        );
        assert_eq!(p.components[0].sha256, d('2'));
        // Keys not listed still merge.
        assert_eq!(p.cni.as_ref().map(|c| c.sha256.clone()), Some(d('e')));
        assert_eq!(p.registry_mirrors.len(), 1);

        // Replaced components are not merged field by field: a component
        // without its url is incomplete, not completed from the parent.
        let no_url = format!(
            "extends = \"base.toml\"\n[kubernetes]\nreplace = [\"components\"]\n\
             [kubernetes.components.kubelet]\nsha256 = \"{}\"\n[cluster]\nrole = \"master\"\n",
            d('2')
        );
        let err = Profile::from_chain(&chain(&[("base.toml", &base), ("m.toml", &no_url)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("component kubelet has no url"), "{err}");

        // A listed key the file does not set becomes empty; a grandchild
        // without `replace` merges with the replaced value as usual.
        let empty = "extends = \"base.toml\"\n[kubernetes]\nreplace = [\"images\", \"cni\", \"registry_mirrors\"]\n";
        let leaf = format!(
            "extends = \"mid.toml\"\n[kubernetes]\nimages = [\"r/dns:v1@sha256:{}\"]\n\
             [cluster]\nrole = \"worker\"\n",
            d('3')
        );
        let p = Profile::from_chain(&chain(&[
            ("base.toml", &base),
            ("mid.toml", empty),
            ("w.toml", &leaf),
        ]))
        .unwrap();
        let names: Vec<&str> = p.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["r/dns:v1"]);
        assert!(p.cni.is_none() && p.registry_mirrors.is_empty());
        assert_eq!(p.components.len(), 2, "components were not listed: kept");
    }

    #[test]
    fn replace_of_an_unknown_key_names_the_line() {
        let err = parse("[kubernetes]\nversion = \"v1\"\nreplace = [\"images\", \"version\"]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "p.toml:3:1: key `kubernetes.replace`: \"version\" cannot be replaced: list some of \
             components, images, cni, registry_mirrors"
        );
    }

    #[test]
    fn registry_mirrors_override_key_by_key_and_are_checked() {
        let parent = "[kubernetes.registry_mirrors]\n\
                      \"registry.k8s.io\" = \"http://127.0.0.1:5000\"\n\
                      \"docker.io\" = \"https://mirror.example\"\n";
        let child = "extends = \"p.toml\"\n[kubernetes.registry_mirrors]\n\
                     \"registry.k8s.io\" = \"http://10.0.0.1:5000\"\n[cluster]\nrole = \"master\"\n";
        let p = Profile::from_chain(&chain(&[("p.toml", parent), ("m.toml", child)])).unwrap();
        assert_eq!(
            p.registry_mirrors
                .get("registry.k8s.io")
                .map(String::as_str),
            Some("http://10.0.0.1:5000")
        );
        assert_eq!(
            p.registry_mirrors.get("docker.io").map(String::as_str),
            Some("https://mirror.example")
        );
        let err =
            parse("[kubernetes.registry_mirrors]\n\"registry.k8s.io\" = \"127.0.0.1:5000\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("kubernetes.registry_mirrors"), "{err}");
        assert!(err.contains("not an http(s) URL"), "{err}");
        let err = parse("[kubernetes.registry_mirrors]\n\"http://r.example\" = \"http://m\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a registry host"), "{err}");
    }

    #[test]
    fn cni_without_url_is_refused() {
        let c = chain(&[(
            "m.toml",
            "[kubernetes.cni]\nname = \"flannel\"\n[cluster]\nrole = \"master\"\n",
        )]);
        let err = Profile::from_chain(&c).unwrap_err().to_string();
        assert!(err.contains("kubernetes.cni.url"), "{err}");
    }

    #[test]
    fn included_and_excluded_is_refused() {
        let c = chain(&[(
            "m.toml",
            "[packages]\ninclude = [\"vim\"]\nexclude = [\"vim\"]\n[cluster]\nrole = \"master\"\n",
        )]);
        let err = Profile::from_chain(&c).unwrap_err();
        assert!(
            err.to_string().contains("both included and excluded"),
            "{err}"
        );
    }

    /// Writes `files` (name, text) into a fresh directory.
    fn profiles(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn extends_cycle_names_the_file_and_line_that_close_it() {
        let dir = profiles(&[
            ("a.toml", &b"# leaf\nextends = \"b.toml\"\n"[..]),
            ("b.toml", &b"name = \"b\"\n\nextends = \"a.toml\"\n"[..]),
        ]);
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        let err = load(&a).unwrap_err();
        assert!(matches!(err, ProfileError::Extends { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:3:1: key `extends`: extends cycle: {} -> {} -> {}",
                b.display(),
                a.display(),
                b.display(),
                a.display()
            )
        );
    }

    #[test]
    fn extends_chain_longer_than_the_limit_says_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..=MAX_EXTENDS_DEPTH {
            std::fs::write(
                dir.path().join(format!("p{i}.toml")),
                format!("extends = \"p{}.toml\"\n", i + 1),
            )
            .unwrap();
        }
        let err = load(&dir.path().join("p0.toml")).unwrap_err().to_string();
        let last = dir.path().join(format!("p{}.toml", MAX_EXTENDS_DEPTH - 1));
        assert!(
            err.starts_with(&format!("{}:1:1: key `extends`: ", last.display())),
            "{err}"
        );
        assert!(
            err.contains("the extends chain is longer than 8 files, the most allowed: "),
            "{err}"
        );
        assert!(err.ends_with("p8.toml"), "{err}");
        // Exactly the limit is fine (the chain's end is a plain profile).
        std::fs::write(
            dir.path().join(format!("p{}.toml", MAX_EXTENDS_DEPTH - 1)),
            "[cluster]\nrole = \"worker\"\n",
        )
        .unwrap();
        let p = load(&dir.path().join("p0.toml")).unwrap();
        assert_eq!(p.files.len(), MAX_EXTENDS_DEPTH);
    }

    #[test]
    fn unusable_extends_targets_name_the_extends_line() {
        let dir = profiles(&[
            (
                "big.toml",
                vec![b'#'; MAX_PROFILE_BYTES as usize + 1].as_slice(),
            ),
            ("latin1.toml", &b"name = \"x\"\n# caf\xe9\n"[..]),
        ]);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let d = dir.path();
        for (target, reason) in [
            (
                "nope.toml".to_owned(),
                "No such file or directory (os error 2)".to_owned(),
            ),
            ("sub".into(), "is a directory, not a profile file".into()),
            // Refused before it is opened: the read would never end.
            (
                "/dev/zero".into(),
                "is not a regular file (a device, FIFO or socket), not a profile".into(),
            ),
            (
                "big.toml".into(),
                format!("is larger than {MAX_PROFILE_BYTES} bytes, the most a profile may be"),
            ),
            ("latin1.toml".into(), "is not UTF-8 text (line 2)".into()),
        ] {
            std::fs::write(
                d.join("leaf.toml"),
                format!("# a worker\n\nname = \"w\"\n  extends = \"{target}\"\n[cluster]\nrole = \"worker\"\n"),
            )
            .unwrap();
            let err = load(&d.join("leaf.toml")).unwrap_err();
            assert!(matches!(err, ProfileError::Extends { .. }), "{err}");
            let resolved = if target.starts_with('/') {
                PathBuf::from(&target)
            } else {
                d.join(&target)
            };
            assert_eq!(
                err.to_string(),
                format!(
                    "{}:4:3: key `extends`: extends {}: {reason}",
                    d.join("leaf.toml").display(),
                    resolved.display()
                ),
                "{target}"
            );
        }
    }

    #[test]
    fn unusable_leaf_says_cannot_read_profile() {
        let err = load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot read profile /dev/zero: is not a regular file (a device, FIFO or socket), not a profile"
        );
        let err = load(Path::new("/nonexistent/p.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cannot read profile /nonexistent/p.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn repository_profiles_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../profiles");
        for (file, role, has_etcd) in [
            ("master.toml", Role::Master, true),
            ("worker.toml", Role::Worker, false),
        ] {
            let p = load(&root.join(file)).unwrap();
            assert_eq!(p.role, role);
            assert_eq!(
                p.include.iter().any(|x| x == "etcd-server"),
                has_etcd,
                "{file}"
            );
            assert!(p.include.iter().any(|x| x == "containerd"), "{file}");
            assert!(p.modules.iter().any(|m| m == "br_netfilter"), "{file}");
            let names: Vec<&str> = p.components.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(
                names,
                ["cni-plugins", "crictl", "kubeadm", "kubectl", "kubelet"],
                "{file}"
            );
            assert!(p
                .images
                .iter()
                .any(|i| i.name == "registry.k8s.io/pause:3.9"));
            assert!(
                p.overlays.iter().all(|o| o.is_dir()),
                "{file}: {:?}",
                p.overlays
            );
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
