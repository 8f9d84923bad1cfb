//! Rendered unit files pass systemd's own parser (`systemd-analyze verify`)
//! without a warning, even with arguments full of quotes, escapes, `%` and `$`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use supervisor::unit::render;
use supervisor::ServiceSpec;

/// Runs `systemd-analyze verify` on `text` saved as `name`; returns (ok, the
/// stderr lines about this file).
fn verify(dir: &Path, name: &str, text: &str) -> (bool, Vec<String>) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install the Debian package `systemd`")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(name))
        .map(String::from)
        .collect();
    (output.status.success(), about)
}

#[test]
fn nasty_arguments_render_to_a_clean_unit() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServiceSpec {
        name: format!("kbverify-{}", std::process::id()),
        description: "verify 100% of it".into(),
        exec: [
            "/bin/echo",
            "",
            " ",
            ";",
            "\\;",
            "\"",
            "'",
            "%",
            "%n",
            "$",
            "$HOME",
            "${A}",
            "a b\tc\nd",
            "\\",
            "\u{7}",
            "€",
            "--initial-cluster=a=https://10.0.0.1:2380,b=x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        env: BTreeMap::from([
            ("A".into(), "x y $HOME 50% \"q\" \\".into()),
            ("EMPTY".into(), String::new()),
        ]),
        user: Some("root".into()),
        working_dir: Some("/tmp".into()),
        after: vec!["network-online.target".into()],
        restart_sec: 3,
    };
    let name = format!("{}.service", spec.name);
    let (ok, about) = verify(dir.path(), &name, &render(&spec).unwrap());
    assert!(
        ok && about.is_empty(),
        "systemd-analyze: ok={ok} {about:#?}"
    );
}

#[test]
fn the_checker_catches_bad_quoting() {
    // Control: the same check flags a hand-written unit with broken quoting,
    // so a clean result above means something.
    let dir = tempfile::tempdir().unwrap();
    let name = format!("kbverify-bad-{}.service", std::process::id());
    let (ok, about) = verify(
        dir.path(),
        &name,
        "[Service]\nExecStart=/bin/echo \"unbalanced \\x\n",
    );
    assert!(
        !ok || !about.is_empty(),
        "systemd-analyze accepted a broken unit"
    );
}
