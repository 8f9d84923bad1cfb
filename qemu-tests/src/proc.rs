//! Small process helpers: run a command and return its output, and manage
//! background processes (QEMU `-daemonize`, dnsmasq) through pid files.
//!
//! A pid is only signalled when `/proc/<pid>/cmdline` still names the pid
//! file, so a recycled pid never hits an unrelated process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use crate::HarnessError;

/// Runs `cmd` to completion; its stdout on success, an error with its
/// stderr otherwise.
pub fn run(cmd: &mut Command) -> Result<String, HarnessError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Spawn {
            program: line.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: line,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pid in `pidfile` if that process is alive (not a zombie) and its
/// command line names `pidfile`.
pub fn pidfile_process(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let marker = pidfile.display().to_string();
    let names_it = cmdline
        .split(|&b| b == 0)
        .any(|arg| String::from_utf8_lossy(arg).contains(&marker));
    (names_it && alive(pid)).then_some(pid)
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Makes this process the reaper of the background processes it starts
/// (QEMU `-daemonize` and dnsmasq fork and leave their parent): killed
/// ones are then reaped here instead of staying zombies under a PID 1
/// that does not reap. Best effort.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::debug!("PR_SET_CHILD_SUBREAPER: {e}");
    }
}

/// Reaps `pid` if it is our (adopted) child and has exited; true while it
/// is a child that has not exited yet.
fn reap(pid: i32) -> bool {
    matches!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Ok(nix::sys::wait::WaitStatus::StillAlive)
    )
}

/// SIGKILLs the process of `pidfile` (see [`pidfile_process`]), waits until
/// it is gone and removes the pid file. Nothing to do is not an error.
pub fn kill_pidfile(pidfile: &Path, what: &str) -> Result<(), HarnessError> {
    if let Some(pid) = pidfile_process(pidfile) {
        tracing::debug!("killing {what} (pid {pid})");
        // ESRCH: it exited in between, which is what we want.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let start = Instant::now();
        while alive(pid) || reap(pid) {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(HarnessError::Command {
                    command: format!("kill -KILL {pid} ({what})"),
                    detail: "still running after 10 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    match std::fs::remove_file(pidfile) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(HarnessError::Io {
            what: "removing",
            path: pidfile.to_owned(),
            source,
        }),
    }
}
