//! What a kubeadm run said, for the status (pure): the phase that failed,
//! the error, the last lines of its output, and its warnings.
//!
//! kubeadm (checked in the 1.24 source) writes a failed phase to stderr as
//! `error execution phase <phase>: <error>` (the workflow runner), the
//! preflight warnings as `\t[WARNING <Check>]: <text>` (stderr), and other
//! warnings through klog (`W1223 10:00:00.000000    1234 file.go:55] <text>`,
//! stderr), for example `unknown field "containerRuntimeEndpoint"` when a
//! document has a field its version does not know. Progress
//! (`[wait-control-plane] ...`) and the long explanation of a failed
//! control plane go to stdout.

use serde::{Deserialize, Serialize};

use crate::runner::{RunError, RunOutput};

/// Most warnings kept (the first ones; kubeadm repeats some).
pub const MAX_WARNINGS: usize = 20;
/// Lines of output kept from a failed run (per stream).
pub const TAIL_LINES: usize = 12;

/// One kubeadm init/join run as `agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeadmRun {
    /// The command line (secrets redacted).
    pub command: String,
    /// It exited 0.
    pub succeeded: bool,
    /// Its exit code (`None`: killed, timed out or not started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The phase that failed (`wait-control-plane`, `preflight`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_phase: Option<String>,
    /// The error, as kubeadm put it (failed runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its warnings (`[WARNING ...]` and klog warning lines), deduplicated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The last lines of stdout, then of stderr (failed runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_tail: Vec<String>,
}

impl KubeadmRun {
    /// A run that exited 0.
    pub fn succeeded(command: &str, out: &RunOutput) -> Self {
        Self {
            command: command.to_owned(),
            succeeded: true,
            exit_code: Some(0),
            failed_phase: None,
            error: None,
            warnings: warnings(&out.stdout, &out.stderr),
            output_tail: Vec::new(),
        }
    }

    /// A run that failed (or never ran).
    pub fn failed(command: &str, err: &RunError) -> Self {
        let mut run = Self {
            command: command.to_owned(),
            succeeded: false,
            exit_code: None,
            failed_phase: None,
            error: None,
            warnings: Vec::new(),
            output_tail: Vec::new(),
        };
        match err {
            RunError::Failed { code, output, .. } => {
                run.exit_code = *code;
                run.failed_phase = failed_phase(&output.stderr);
                run.error = Some(error_text(&output.stderr, *code));
                run.warnings = warnings(&output.stdout, &output.stderr);
                run.output_tail = tail(&output.stdout, TAIL_LINES)
                    .into_iter()
                    .chain(tail(&output.stderr, TAIL_LINES))
                    .collect();
            }
            other => run.error = Some(other.to_string()),
        }
        run
    }

    /// One line for `last_error`: `kubeadm init failed in phase
    /// wait-control-plane: couldn't initialize a Kubernetes cluster`.
    /// A list announced with a colon (`Some fatal errors occurred:`)
    /// keeps its first item.
    pub fn summary(&self, what: &str) -> String {
        let mut lines = self
            .error
            .as_deref()
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty());
        let mut error = lines.next().unwrap_or("no error message").to_owned();
        if let Some(p) = &self.failed_phase {
            let prefix = format!("error execution phase {p}: ");
            if let Some(rest) = error.strip_prefix(&prefix) {
                error = rest.to_owned();
            }
        }
        if error.ends_with(':') {
            if let Some(next) = lines.next() {
                error = format!("{error} {next}");
            }
        }
        match &self.failed_phase {
            Some(p) => format!("{what} failed in phase {p}: {error}"),
            None => format!("{what} failed: {error}"),
        }
    }
}

/// The phase of `error execution phase <phase>: ...`, if kubeadm failed in
/// one.
pub fn failed_phase(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("error execution phase ")?;
        let phase = rest.split(':').next()?.trim();
        (!phase.is_empty()).then(|| phase.to_owned())
    })
}

/// The error kubeadm printed: from the `error execution phase` line (or
/// the whole stderr without warnings) to the end, without its hint about
/// stack traces; the exit code when it printed nothing.
pub fn error_text(stderr: &str, code: Option<i32>) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim().starts_with("error execution phase "))
        .unwrap_or(0);
    let kept: Vec<&str> = lines[start..]
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("To see the stack trace of this error"))
        .filter(|l| warning_text(l).is_none())
        .collect();
    if kept.is_empty() {
        return match code {
            Some(c) => format!("exit status {c}, nothing on stderr"),
            None => "killed by a signal, nothing on stderr".to_owned(),
        };
    }
    let n = kept.len();
    kept[n.saturating_sub(TAIL_LINES)..].join("\n")
}

/// The warning in a line of kubeadm's output, if it is one: a
/// `[WARNING ...]` line (trimmed) or a klog warning without its header.
pub fn warning_text(line: &str) -> Option<String> {
    let t = line.trim();
    if t.contains("[WARNING ") || t.contains("WARNING:") {
        return Some(t.to_owned());
    }
    // klog: `Wmmdd hh:mm:ss.uuuuuu threadid file:line] msg`.
    let b = t.as_bytes();
    if b.len() > 6 && b[0] == b'W' && b[1..5].iter().all(u8::is_ascii_digit) && b[5] == b' ' {
        if let Some(i) = t.find("] ") {
            return Some(t[i + 2..].trim().to_owned());
        }
    }
    None
}

/// Every warning of a run, in order, without repeats, at most
/// [`MAX_WARNINGS`].
pub fn warnings(stdout: &str, stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in stderr
        .lines()
        .chain(stdout.lines())
        .filter_map(warning_text)
    {
        if !out.contains(&w) && out.len() < MAX_WARNINGS {
            out.push(w);
        }
    }
    out
}

fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a real 1.24 `kubeadm init` printed when its control plane did
    /// not come up (shortened).
    const WAIT_CP_STDOUT: &str = "[init] Using Kubernetes version: v1.24.0-alpha.1\n\
        [preflight] Running pre-flight checks\n\
        [wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory \"/etc/kubernetes/manifests\". This can take up to 10m0s\n\
        [kubelet-check] Initial timeout of 40s passed.\n\
        \n\
        Unfortunately, an error has occurred:\n\
        \ttimed out waiting for the condition\n";
    const WAIT_CP_STDERR: &str = "W1223 10:00:00.123456    1234 strict.go:55] error unmarshaling configuration schema.GroupVersionKind{Group:\"kubelet.config.k8s.io\", Version:\"v1beta1\", Kind:\"KubeletConfiguration\"}: error unmarshaling JSON: while decoding JSON: json: unknown field \"containerRuntimeEndpoint\"\n\
        \t[WARNING Service-Kubelet]: kubelet service is not enabled, please run 'systemctl enable kubelet.service'\n\
        \t[WARNING Hostname]: hostname \"master-1\" could not be reached\n\
        \t[WARNING Service-Kubelet]: kubelet service is not enabled, please run 'systemctl enable kubelet.service'\n\
        error execution phase wait-control-plane: couldn't initialize a Kubernetes cluster\n\
        To see the stack trace of this error execute with --v=5 or higher\n";

    fn failed(stdout: &str, stderr: &str, code: Option<i32>) -> RunError {
        RunError::Failed {
            command: "kubeadm init --config /var/lib/kubeboot/kubeadm/init.yaml".into(),
            code,
            stderr_tail: String::new(),
            output: RunOutput {
                stdout: stdout.into(),
                stderr: stderr.into(),
            },
        }
    }

    #[test]
    fn a_failed_wait_control_plane_names_its_phase_error_and_warnings() {
        let run = KubeadmRun::failed(
            "kubeadm init",
            &failed(WAIT_CP_STDOUT, WAIT_CP_STDERR, Some(1)),
        );
        assert!(!run.succeeded);
        assert_eq!(run.exit_code, Some(1));
        assert_eq!(run.failed_phase.as_deref(), Some("wait-control-plane"));
        assert_eq!(
            run.error.as_deref(),
            Some("error execution phase wait-control-plane: couldn't initialize a Kubernetes cluster")
        );
        assert_eq!(
            run.summary("kubeadm init"),
            "kubeadm init failed in phase wait-control-plane: couldn't initialize a Kubernetes cluster"
        );
        assert_eq!(run.warnings.len(), 3, "{:?}", run.warnings);
        assert!(run.warnings[0].contains("unknown field \"containerRuntimeEndpoint\""));
        assert!(!run.warnings[0].starts_with("W1223"), "{}", run.warnings[0]);
        assert_eq!(
            run.warnings[1],
            "[WARNING Service-Kubelet]: kubelet service is not enabled, please run 'systemctl enable kubelet.service'"
        );
        assert!(run.warnings[2].starts_with("[WARNING Hostname]"));
        // The tail shows what kubeadm was doing (stdout) and its stderr.
        assert!(run
            .output_tail
            .iter()
            .any(|l| l.contains("timed out waiting for the condition")));
        assert!(run
            .output_tail
            .iter()
            .any(|l| l.starts_with("error execution phase")));
    }

    #[test]
    fn preflight_errors_and_odd_failures() {
        let stderr = "error execution phase preflight: [preflight] Some fatal errors occurred:\n\
            \t[ERROR NumCPU]: the number of available CPUs 1 is less than the required 2\n\
            \t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1\n\
            [preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`\n\
            To see the stack trace of this error execute with --v=5 or higher\n";
        let run = KubeadmRun::failed("kubeadm join", &failed("", stderr, Some(1)));
        assert_eq!(run.failed_phase.as_deref(), Some("preflight"));
        let e = run.error.clone().unwrap();
        assert!(
            e.contains("[ERROR NumCPU]") && e.contains("ip_forward"),
            "{e}"
        );
        assert!(!e.contains("stack trace"), "{e}");
        assert_eq!(
            run.summary("kubeadm join"),
            "kubeadm join failed in phase preflight: [preflight] Some fatal errors occurred: \
             [ERROR NumCPU]: the number of available CPUs 1 is less than the required 2"
        );
        // No phase: a configuration error before the workflow starts.
        let run = KubeadmRun::failed(
            "kubeadm init",
            &failed(
                "",
                "couldn't parse the configuration: yaml: line 3\n",
                Some(1),
            ),
        );
        assert_eq!(run.failed_phase, None);
        assert_eq!(
            run.summary("kubeadm init"),
            "kubeadm init failed: couldn't parse the configuration: yaml: line 3"
        );
        // Nothing printed, killed.
        let run = KubeadmRun::failed("kubeadm init", &failed("", "", None));
        assert_eq!(
            run.error.as_deref(),
            Some("killed by a signal, nothing on stderr")
        );
        // Never started, or timed out: the runner's message.
        let run = KubeadmRun::failed(
            "kubeadm init",
            &RunError::Timeout {
                command: "kubeadm init".into(),
                limit: std::time::Duration::from_secs(1200),
            },
        );
        assert_eq!(run.exit_code, None);
        assert!(run.error.unwrap().contains("did not finish"));
    }

    #[test]
    fn a_successful_run_keeps_its_warnings_only() {
        let run = KubeadmRun::succeeded(
            "kubeadm join",
            &RunOutput {
                stdout: "This node has joined the cluster\n".into(),
                stderr: "\t[WARNING SystemVerification]: missing optional cgroups: hugetlb\n\
                         [config] WARNING: Ignored YAML document with GroupVersionKind kubeadm.k8s.io/v1beta3, Kind=Foo\n"
                    .into(),
            },
        );
        assert!(run.succeeded);
        assert_eq!(run.exit_code, Some(0));
        assert_eq!(run.warnings.len(), 2);
        assert!(run.output_tail.is_empty() && run.error.is_none());
        for not_a_warning in [
            "[preflight] Running pre-flight checks",
            "Waiting for something",
            "W0 nope",
            "",
        ] {
            assert_eq!(warning_text(not_a_warning), None, "{not_a_warning}");
        }
    }

    #[test]
    fn warnings_are_capped_and_serialise_compactly() {
        let stderr: String = (0..50).map(|i| format!("[WARNING X{i}]: w\n")).collect();
        assert_eq!(warnings("", &stderr).len(), MAX_WARNINGS);
        let run = KubeadmRun::succeeded("kubeadm join", &RunOutput::default());
        let v = serde_json::to_value(&run).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"command": "kubeadm join", "succeeded": true, "exit_code": 0})
        );
        assert_eq!(serde_json::from_value::<KubeadmRun>(v).unwrap(), run);
    }
}
