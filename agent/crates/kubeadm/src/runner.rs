//! Running kubeadm (and kubectl): the [`KubeadmRunner`] trait, the real
//! [`ProcessRunner`], and the [`RecordingRunner`] stand-in for tests.
//!
//! An [`Invocation`] is the whole effect of one step: the files to write
//! first (the rendered configuration, mode 0600 because it holds the
//! bootstrap token) and the command line. A runner writes the files, runs
//! the command and returns its output. Secrets listed in `redact` are
//! replaced by `<redacted>` in everything a runner logs or returns in an
//! error (kubeadm prints the token in its join hints).

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

/// Which program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `kubeadm`.
    Kubeadm,
    /// `kubectl` (CNI manifest).
    Kubectl,
    /// containerd's `ctr` (importing the image's OCI archive).
    Ctr,
}

impl Program {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Program::Kubeadm => "kubeadm",
            Program::Kubectl => "kubectl",
            Program::Ctr => "ctr",
        }
    }
}

/// A file to write before the command runs.
#[derive(Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Where (host path, already under the root).
    pub path: PathBuf,
    /// Content.
    pub contents: String,
    /// File mode.
    pub mode: u32,
}

impl std::fmt::Debug for FileSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileSpec({}, {} bytes, {:o})",
            self.path.display(),
            self.contents.len(),
            self.mode
        )
    }
}

/// One command with the files it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program.
    pub program: Program,
    /// Arguments (after the program name).
    pub args: Vec<String>,
    /// Files to write first.
    pub files: Vec<FileSpec>,
    /// Strings never to show in logs or errors.
    pub redact: Vec<String>,
}

impl Invocation {
    /// A kubeadm command.
    pub fn kubeadm(args: Vec<String>) -> Self {
        Self {
            program: Program::Kubeadm,
            args,
            files: Vec::new(),
            redact: Vec::new(),
        }
    }

    /// The command line as it may be shown (secrets redacted).
    pub fn display(&self) -> String {
        let line = format!("{} {}", self.program.name(), self.args.join(" "));
        redact(&line, &self.redact)
    }
}

/// Replaces every secret in `text`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

/// What a command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Errors from running a command; messages are already redacted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RunError {
    /// A file could not be written.
    #[error("writing {path}: {reason}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The program could not be started.
    #[error("starting `{command}`: {reason}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error (for example "No such file or directory").
        reason: String,
    },
    /// The program exited unsuccessfully.
    #[error("`{command}` exited with {code:?}: {stderr_tail}")]
    Failed {
        /// The command line.
        command: String,
        /// The exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// The last lines of its standard error.
        stderr_tail: String,
        /// Everything it printed (redacted), for [`crate::outcome`].
        output: RunOutput,
    },
    /// The program ran past its time limit and was killed.
    #[error("`{command}` did not finish within {limit:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        limit: Duration,
    },
}

/// Runs kubeadm invocations.
pub trait KubeadmRunner: Send + Sync {
    /// Writes the invocation's files, runs the command, returns its output
    /// or a (redacted) error.
    fn run(&self, inv: &Invocation) -> impl Future<Output = Result<RunOutput, RunError>> + Send;
}

fn write_files(inv: &Invocation) -> Result<(), RunError> {
    for f in &inv.files {
        let err = |e: std::io::Error| RunError::WriteFile {
            path: f.path.clone(),
            reason: e.to_string(),
        };
        if let Some(dir) = f.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        atomic_file::write(&f.path, f.contents.as_bytes(), f.mode).map_err(err)?;
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The real runner: `kubeadm`/`kubectl` as child processes.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    /// The kubeadm binary.
    pub kubeadm: PathBuf,
    /// The kubectl binary.
    pub kubectl: PathBuf,
    /// containerd's ctr binary (Debian package containerd).
    pub ctr: PathBuf,
    /// Time limit per command (kubeadm init waits minutes for the control
    /// plane under emulation).
    pub timeout: Duration,
}

impl Default for ProcessRunner {
    fn default() -> Self {
        Self {
            kubeadm: PathBuf::from("/usr/bin/kubeadm"),
            kubectl: PathBuf::from("/usr/bin/kubectl"),
            ctr: PathBuf::from("/usr/bin/ctr"),
            timeout: Duration::from_secs(20 * 60),
        }
    }
}

impl ProcessRunner {
    /// Takes the kubeadm and kubectl paths from the image's record of
    /// installed components (imagegen installs them where the profile
    /// says, `/usr/bin/<name>` by default); others keep their default.
    pub fn with_components(mut self, components: &[crate::image::InstalledComponent]) -> Self {
        for c in components {
            match c.name.as_str() {
                "kubeadm" => self.kubeadm = PathBuf::from(&c.path),
                "kubectl" => self.kubectl = PathBuf::from(&c.path),
                _ => {}
            }
        }
        self
    }
}

impl KubeadmRunner for ProcessRunner {
    async fn run(&self, inv: &Invocation) -> Result<RunOutput, RunError> {
        write_files(inv)?;
        let binary = match inv.program {
            Program::Kubeadm => &self.kubeadm,
            Program::Kubectl => &self.kubectl,
            Program::Ctr => &self.ctr,
        };
        let command = inv.display();
        tracing::info!("running {command}");
        let child = tokio::process::Command::new(binary)
            .args(&inv.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RunError::Spawn {
                command: command.clone(),
                reason: format!("{}: {e}", binary.display()),
            })?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => {
                return Err(RunError::Timeout {
                    command,
                    limit: self.timeout,
                })
            }
            Ok(Err(e)) => {
                return Err(RunError::Spawn {
                    command,
                    reason: e.to_string(),
                })
            }
            Ok(Ok(out)) => out,
        };
        let stdout = redact(&String::from_utf8_lossy(&out.stdout), &inv.redact);
        let stderr = redact(&String::from_utf8_lossy(&out.stderr), &inv.redact);
        if !out.status.success() {
            return Err(RunError::Failed {
                command,
                code: out.status.code(),
                stderr_tail: tail(&stderr, 15),
                output: RunOutput { stdout, stderr },
            });
        }
        tracing::debug!("{command}: done");
        Ok(RunOutput { stdout, stderr })
    }
}

/// One recorded call of the [`RecordingRunner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The program.
    pub program: Program,
    /// Its arguments, unredacted (tests compare exact commands).
    pub args: Vec<String>,
    /// The files the call wrote: (host path, content, mode).
    pub files: Vec<(PathBuf, String, u32)>,
}

/// A scripted effect of a recorded call: what a real kubeadm would leave.
pub type Effect = Box<dyn Fn(&Invocation) -> Result<RunOutput, RunError> + Send + Sync>;

/// A stand-in for the kubeadm binary (tests only): writes the files like
/// the real runner, records every call, and answers from a script (a
/// queue of results, then a default effect).
#[derive(Clone)]
pub struct RecordingRunner {
    calls: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Result<RunOutput, RunError>>>>,
    effect: Arc<Effect>,
}

impl Default for RecordingRunner {
    fn default() -> Self {
        Self::with_effect(Box::new(|_| Ok(RunOutput::default())))
    }
}

impl RecordingRunner {
    /// A runner whose unscripted calls run `effect`.
    pub fn with_effect(effect: Effect) -> Self {
        Self {
            calls: Arc::new(Mutex::new(Vec::new())),
            script: Arc::new(Mutex::new(VecDeque::new())),
            effect: Arc::new(effect),
        }
    }

    /// Queues the result of the next unscripted call.
    pub fn push_result(&self, r: Result<RunOutput, RunError>) {
        if let Ok(mut s) = self.script.lock() {
            s.push_back(r);
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Recorded> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        if let Ok(mut c) = self.calls.lock() {
            c.clear();
        }
    }
}

impl KubeadmRunner for RecordingRunner {
    async fn run(&self, inv: &Invocation) -> Result<RunOutput, RunError> {
        write_files(inv)?;
        if let Ok(mut c) = self.calls.lock() {
            c.push(Recorded {
                program: inv.program,
                args: inv.args.clone(),
                files: inv
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), f.contents.clone(), f.mode))
                    .collect(),
            });
        }
        let scripted = self.script.lock().ok().and_then(|mut s| s.pop_front());
        match scripted {
            Some(r) => r,
            None => (self.effect)(inv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn binary_paths_follow_the_images_record() {
        let c = |name: &str, path: &str| crate::image::InstalledComponent {
            name: name.into(),
            path: path.into(),
            sha256: String::new(),
        };
        let r = ProcessRunner::default().with_components(&[
            c("kubelet", "/opt/k8s/kubelet"),
            c("kubeadm", "/opt/k8s/kubeadm"),
        ]);
        assert_eq!(r.kubeadm, PathBuf::from("/opt/k8s/kubeadm"));
        assert_eq!(r.kubectl, PathBuf::from("/usr/bin/kubectl"));
        assert_eq!(r.ctr, PathBuf::from("/usr/bin/ctr"));
    }

    #[test]
    fn redacts_every_secret() {
        let inv = Invocation {
            program: Program::Kubeadm,
            args: vec![
                "token".into(),
                "create".into(),
                "abcdef.0123456789abcdef".into(),
            ],
            files: vec![],
            redact: vec!["abcdef.0123456789abcdef".into()],
        };
        assert_eq!(inv.display(), "kubeadm token create <redacted>");
    }

    #[tokio::test]
    async fn process_runner_writes_files_and_reports_failures_redacted() {
        let dir = tempfile::tempdir().unwrap();
        // /bin/sh stands in for kubeadm: it prints the secret on stderr and fails.
        let runner = ProcessRunner {
            kubeadm: "/bin/sh".into(),
            kubectl: "/bin/sh".into(),
            ctr: "/bin/sh".into(),
            timeout: Duration::from_secs(10),
        };
        let cfg = dir.path().join("sub/init.yaml");
        let inv = Invocation {
            program: Program::Kubeadm,
            args: vec![
                "-c".into(),
                "cat \"$0\"; echo 'token s3cr3t-token' >&2; exit 3".into(),
                cfg.display().to_string(),
            ],
            files: vec![FileSpec {
                path: cfg.clone(),
                contents: "kind: X\n".into(),
                mode: 0o600,
            }],
            redact: vec!["s3cr3t-token".into()],
        };
        let err = runner.run(&inv).await.unwrap_err();
        match &err {
            RunError::Failed {
                code,
                stderr_tail,
                output,
                ..
            } => {
                assert_eq!(*code, Some(3));
                assert_eq!(stderr_tail, "token <redacted>");
                assert_eq!(output.stderr, "token <redacted>\n");
                assert_eq!(output.stdout, "kind: X\n");
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.to_string().contains("s3cr3t"));
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "kind: X\n");
        assert_eq!(
            std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let ok = Invocation {
            program: Program::Kubeadm,
            args: vec!["-c".into(), "echo hello".into()],
            files: vec![],
            redact: vec![],
        };
        assert_eq!(runner.run(&ok).await.unwrap().stdout, "hello\n");
    }

    #[tokio::test]
    async fn process_runner_names_a_missing_binary_and_enforces_the_limit() {
        let runner = ProcessRunner {
            kubeadm: "/nonexistent/kubeadm".into(),
            kubectl: "/bin/sh".into(),
            ctr: "/bin/sh".into(),
            timeout: Duration::from_millis(300),
        };
        let err = runner
            .run(&Invocation::kubeadm(vec!["version".into()]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kubeadm"), "{err}");
        let slow = Invocation {
            program: Program::Kubectl,
            args: vec!["-c".into(), "sleep 5".into()],
            files: vec![],
            redact: vec![],
        };
        let started = std::time::Instant::now();
        assert!(matches!(
            runner.run(&slow).await,
            Err(RunError::Timeout { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
