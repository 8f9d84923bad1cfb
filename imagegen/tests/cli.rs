//! The `imagegen` binary's failure modes that need no network: each names
//! what is wrong and where, exits 1, and leaves no output directory.

use std::path::Path;
use std::process::Command;

/// A profile that parses: a worker, nothing else.
const WORKER: &str = "[cluster]\nrole = \"worker\"\n";

fn imagegen(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagegen"))
        .args(args)
        .current_dir(cwd)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run imagegen");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory holding the profile `p.toml` and a stub agent
/// binary `agent`.
fn scratch(profile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), profile).unwrap();
    std::fs::write(dir.path().join("agent"), b"#!/bin/true\n").unwrap();
    dir
}

/// `imagegen build p.toml <args> --cache c --out o` in `dir`: the exit code
/// and stderr.
fn build(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["build", "p.toml"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--cache", "c", "--out", "o"]);
    let (code, _, err) = imagegen(&all, dir);
    (code, err)
}

#[test]
fn malformed_profile_names_file_line_and_key() {
    let dir = scratch("[cluster]\nrole = \"master\"\n[kernel]\nmodules = \"virtio_blk\"\n");
    let (code, err) = build(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("p.toml:4:"), "{err}");
    assert!(err.contains("kernel.modules"), "{err}");
    assert!(!dir.path().join("o").exists());
}

#[test]
fn missing_agent_binary_says_make_build() {
    let dir = scratch(WORKER);
    let (code, err) = build(
        dir.path(),
        &["--agent-bin", "no-such-agent", "--without-kubernetes"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-agent"), "{err}");
    assert!(err.contains("make build"), "{err}");
    assert!(!dir.path().join("o").exists());
}

#[test]
fn missing_lockfile_says_how_to_create_it() {
    let dir = scratch(WORKER);
    let (code, err) = build(
        dir.path(),
        &[
            "--agent-bin",
            "agent",
            "--without-kubernetes",
            "--lockfile",
            "nope.lock",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nope.lock"), "{err}");
    assert!(err.contains("imagegen lock"), "{err}");
}

#[test]
fn unreachable_kubernetes_source_fails_unless_without_kubernetes() {
    // Loopback port 9: nothing listens, the connection is refused at once.
    let dir = scratch(
        "[cluster]\nrole = \"worker\"\n[kubernetes]\nversion = \"v1.30.4\"\n\
         [kubernetes.components.kubelet]\nurl = \"http://127.0.0.1:9/kubelet\"\n\
         sha256 = \"0c02c0f997b3e9769eae7ca051856054411fca947b3d5409d991ce1964dd0e69\"\n",
    );
    let (code, err) = build(dir.path(), &["--agent-bin", "agent"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("http://127.0.0.1:9/kubelet"), "{err}");
    assert!(err.contains("--without-kubernetes"), "{err}");
    assert!(err.contains("--kubernetes auto"), "{err}");
    assert!(err.contains("--components-dir"), "{err}");
    assert!(!dir.path().join("o").exists());
}

#[test]
fn auto_goes_on_without_kubernetes_when_upstream_is_unreachable() {
    // The kubelet URL and the registry mirror: loopback ports nobody
    // listens on. The build then stops at the (equally unreachable)
    // package archive, after the Kubernetes decision.
    let dir = scratch(
        "[cluster]\nrole = \"worker\"\n[kubernetes]\nversion = \"v1.30.4\"\n\
         images = [\"registry.k8s.io/pause:3.9@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097\"]\n\
         [kubernetes.components.kubelet]\nurl = \"http://127.0.0.1:9/kubelet\"\n\
         sha256 = \"0c02c0f997b3e9769eae7ca051856054411fca947b3d5409d991ce1964dd0e69\"\n",
    );
    let (code, err) = build(
        dir.path(),
        &[
            "--agent-bin",
            "agent",
            "--kubernetes",
            "auto",
            "--registry-mirror",
            "registry.k8s.io=http://127.0.0.1:9",
            "--archive",
            "http://127.0.0.1:9/debian",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("WARNING: upstream is unreachable: http://127.0.0.1:9/kubelet"),
        "{err}"
    );
    assert!(err.contains("building WITHOUT Kubernetes"), "{err}");
    assert!(err.contains("127.0.0.1:9/debian"), "{err}");
    assert!(!dir.path().join("o").exists());
    // stderr is a pipe here: the tracing WARN line is plain text.
    assert!(
        err.contains(" WARN ") && err.contains("upstream unreachable"),
        "{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "colour codes in redirected stderr: {err:?}"
    );
    // Every line says its cause once (the refused connection, os error 111).
    for line in err.lines() {
        assert!(
            line.matches("os error 111").count() <= 1,
            "cause repeated: {line}"
        );
    }
    assert!(err.contains("os error 111"), "{err}");
}

#[test]
fn none_conflicts_with_components_dir() {
    let (code, _, err) = imagegen(
        &[
            "build",
            "p.toml",
            "--kubernetes",
            "none",
            "--components-dir",
            "d",
        ],
        Path::new("."),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--components-dir"), "{err}");
}

#[test]
fn inspect_refuses_an_incomplete_image_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    std::fs::write(dir.path().join("img/vmlinuz"), b"k").unwrap();
    let (code, _, err) = imagegen(&["inspect", "img"], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("manifest.json"), "{err}");
}

#[test]
fn help_explains_every_build_option() {
    let (code, out, _) = imagegen(&["build", "--help"], Path::new("."));
    assert_eq!(code, 0);
    for opt in [
        "--out",
        "--format",
        "--lockfile",
        "--offline",
        "--archive",
        "--cache",
        "--agent-bin",
        "--kubernetes <SOURCE>",
        "--without-kubernetes",
        "--components-dir",
        "--registry-mirror",
        "--source-date-epoch",
    ] {
        assert!(out.contains(opt), "{opt} missing from --help:\n{out}");
    }
}

#[test]
fn pins_prints_the_kubernetes_table_of_a_components_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("kubeadm"), b"kubeadm built here").unwrap();
    std::fs::create_dir(d.join("images")).unwrap();
    let name = "registry.k8s.io/kube-apiserver:v1.24.0-alpha.1";
    let (archive, digest) = kubernetes_payload::images::tiny_archive(name, 0).unwrap();
    std::fs::write(d.join("images/kube-apiserver.tar"), archive).unwrap();
    let (code, out, err) = imagegen(&["pins", "--components-dir", "."], d);
    eprintln!("{out}");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\n[kubernetes]\nversion = \"v1.24.0-alpha.1\""),
        "{out}"
    );
    assert!(
        out.contains("replace = [\"components\", \"images\"]\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("    \"{name}@{digest}\",\n")),
        "{out}"
    );
    assert!(out.contains("[kubernetes.components.kubeadm]\n"), "{out}");
    // The output is a valid TOML table.
    let table: toml::Table = out.parse().unwrap();
    assert_eq!(
        table["kubernetes"]["version"].as_str(),
        Some("v1.24.0-alpha.1")
    );

    let (code, _, err) = imagegen(&["pins", "--components-dir", "missing"], d);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        "imagegen: error: listing missing: No such file or directory (os error 2)"
    );
}
