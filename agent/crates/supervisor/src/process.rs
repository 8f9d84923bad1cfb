//! [`ProcessSupervisor`]: services as children of the agent, for network
//! namespaces and test machines where systemd is absent.
//!
//! Each service gets a supervising tokio task that owns the child process:
//!
//! ```text
//! start ──spawn──▶ Active ──child exits──▶ Activating (auto-restart)
//!                    ▲                          │ restart_sec elapsed
//!                    └────────── spawn ◀────────┘
//! stop (any state) ──SIGTERM, then SIGKILL after stop_timeout──▶ Inactive
//! ```
//!
//! A failed re-spawn (the binary vanished, say) becomes `Failed` and is
//! retried every `restart_sec`, like systemd with `Restart=always`.
//!
//! No orphans: each child runs in its own process group, gets
//! `PR_SET_PDEATHSIG=SIGKILL` (so it dies when the agent is SIGKILLed), and
//! dropping the supervisor SIGKILLs every child group. stdout and stderr go
//! straight to `<log_dir>/<name>.log` (appended; the child writes the file
//! itself, so no copying task can fall behind).
//!
//! Linux sends the death signal when the *thread* that forked the child
//! exits, not the process. tokio threads come and go (`spawn_blocking`
//! threads exit when idle, `block_in_place` hands a worker over to the
//! blocking pool), so every child is forked from one dedicated thread that
//! lives as long as the process (`spawn_from_stable_thread`).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::spec::validate_name;
use crate::{ServiceSpec, ServiceState, Supervisor, SupervisorError};

/// systemd's default `PATH` for services, used unless the spec sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long [`Supervisor::stop`] waits after SIGTERM before SIGKILL, unless
/// set with [`ProcessSupervisor::with_stop_timeout`]; the systemd units the
/// agent writes carry the same bound (`TimeoutStopSec=`, systemd's default
/// is 90 s). A healthy etcd stops in well under a second; one without
/// quorum may not stop on SIGTERM at all.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs services as supervised children of the agent. See the module docs.
///
/// Not `Clone`: dropping it kills every child, so share it behind an `Arc`.
#[derive(Debug)]
pub struct ProcessSupervisor {
    log_dir: PathBuf,
    stop_timeout: Duration,
    /// Lifecycle operations (start/stop/restart) are serialised by this lock;
    /// state queries only take the per-service `Shared` locks.
    services: tokio::sync::Mutex<HashMap<String, Service>>,
    /// The same `Shared` handles, reachable without an async lock so `Drop`
    /// can kill the children synchronously.
    shared: Mutex<HashMap<String, Arc<Shared>>>,
}

/// What a snapshot of a supervised service says; see [`ProcessSupervisor::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    /// The service's state.
    pub state: ServiceState,
    /// The running child's process id, if one is running.
    pub pid: Option<u32>,
    /// How many times the child was restarted after exiting by itself.
    pub restarts: u32,
    /// How the last child exited by itself (e.g. `exit status: 1`), if it did.
    pub last_exit: Option<String>,
    /// The log file receiving the child's stdout and stderr.
    pub log_file: PathBuf,
}

#[derive(Debug)]
struct Service {
    spec: ServiceSpec,
    /// Sends the stop request; the task answers on the enclosed sender once
    /// the child is gone. `None` after the service was stopped.
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: Option<JoinHandle<()>>,
}

/// State shared between the supervisor and the service's task.
#[derive(Debug)]
struct Shared {
    status: Mutex<ProcessStatus>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ProcessStatus> {
        // A poisoned lock only means a panic elsewhere mid-update; the status
        // is plain data and still the best we know.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ProcessSupervisor {
    /// A supervisor writing service logs to `<log_dir>/<name>.log` (the
    /// directory is created when the first service starts).
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        ProcessSupervisor {
            log_dir: log_dir.into(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            services: tokio::sync::Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
        }
    }

    /// Sets how long `stop` waits after SIGTERM before sending SIGKILL.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The directory holding the services' log files.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The log file of service `name`.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// A snapshot of service `name`, or `None` if it was never started.
    pub fn status(&self, name: &str) -> Option<ProcessStatus> {
        let shared = lock_map(&self.shared).get(name).cloned()?;
        let status = shared.lock().clone();
        Some(status)
    }

    /// Stops every service (SIGTERM, then SIGKILL after the stop timeout) and
    /// waits for them to exit. Use it for an orderly shutdown; dropping the
    /// supervisor SIGKILLs instead.
    pub async fn shutdown(&self) {
        let names: Vec<String> = self.services.lock().await.keys().cloned().collect();
        for name in names {
            if let Err(error) = self.stop(&name).await {
                warn!(service = %name, %error, "stopping service during shutdown failed");
            }
        }
    }

    async fn start_locked(
        &self,
        services: &mut HashMap<String, Service>,
        spec: &ServiceSpec,
    ) -> Result<(), SupervisorError> {
        let log_file = self.log_file(&spec.name);
        let shared = Arc::new(Shared {
            status: Mutex::new(ProcessStatus {
                state: ServiceState::Activating,
                pid: None,
                restarts: 0,
                last_exit: None,
                log_file: log_file.clone(),
            }),
        });
        lock_map(&self.shared).insert(spec.name.clone(), shared.clone());
        let child = match spawn_child(spec, &log_file) {
            Ok(child) => child,
            Err(error) => {
                shared.lock().state = ServiceState::Failed {
                    reason: error.to_string(),
                };
                services.insert(
                    spec.name.clone(),
                    Service {
                        spec: spec.clone(),
                        stop: None,
                        task: None,
                    },
                );
                return Err(error);
            }
        };
        {
            let mut status = shared.lock();
            status.state = ServiceState::Active;
            status.pid = child.id();
        }
        info!(service = %spec.name, pid = ?child.id(), log = %log_file.display(), "started service");
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(
            spec.clone(),
            log_file,
            child,
            shared,
            stop_rx,
            self.stop_timeout,
        ));
        services.insert(
            spec.name.clone(),
            Service {
                spec: spec.clone(),
                stop: Some(stop_tx),
                task: Some(task),
            },
        );
        Ok(())
    }

    async fn stop_locked(
        &self,
        services: &mut HashMap<String, Service>,
        name: &str,
    ) -> Result<(), SupervisorError> {
        let Some(service) = services.get_mut(name) else {
            return Ok(());
        };
        let Some(stop) = service.stop.take() else {
            // Never came up (its first spawn failed) or already stopped.
            if let Some(shared) = lock_map(&self.shared).get(name) {
                shared.lock().state = ServiceState::Inactive;
            }
            return Ok(());
        };
        let task = service.task.take();
        let (done_tx, done_rx) = oneshot::channel();
        let answered = stop.send(done_tx).is_ok() && done_rx.await.is_ok();
        if let Some(task) = task {
            // The task ends right after answering; a panic in it shows here.
            if let Err(error) = task.await {
                warn!(service = %name, %error, "supervising task failed");
            }
        }
        if answered {
            info!(service = %name, "stopped service");
            Ok(())
        } else {
            Err(SupervisorError::TaskGone {
                name: name.to_string(),
            })
        }
    }
}

#[async_trait]
impl Supervisor for ProcessSupervisor {
    async fn start(&self, spec: &ServiceSpec) -> Result<(), SupervisorError> {
        spec.validate()?;
        let mut services = self.services.lock().await;
        if let Some(existing) = services.get(&spec.name) {
            let running = existing.stop.is_some();
            if running && existing.spec == *spec {
                debug!(service = %spec.name, "already running with the same spec");
                return Ok(());
            }
            if running {
                info!(service = %spec.name, "spec changed: restarting service");
                self.stop_locked(&mut services, &spec.name).await?;
            }
        }
        self.start_locked(&mut services, spec).await
    }

    async fn stop(&self, name: &str) -> Result<(), SupervisorError> {
        validate_name(name)?;
        let mut services = self.services.lock().await;
        self.stop_locked(&mut services, name).await
    }

    async fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        validate_name(name)?;
        let mut services = self.services.lock().await;
        let spec = match services.get(name) {
            Some(service) => service.spec.clone(),
            None => {
                return Err(SupervisorError::UnknownService {
                    name: name.to_string(),
                })
            }
        };
        self.stop_locked(&mut services, name).await?;
        self.start_locked(&mut services, &spec).await
    }

    async fn state(&self, name: &str) -> Result<ServiceState, SupervisorError> {
        validate_name(name)?;
        Ok(self
            .status(name)
            .map_or(ServiceState::Inactive, |status| status.state))
    }
}

impl Drop for ProcessSupervisor {
    fn drop(&mut self) {
        for (name, shared) in lock_map(&self.shared).iter() {
            let pid = shared.lock().pid.take();
            if let Some(pid) = pid {
                debug!(service = %name, pid, "supervisor dropped: killing service");
                // Nothing more to do if it fails: the child is already gone.
                let _ = kill_group(pid, Signal::SIGKILL);
            }
        }
        for service in self.services.get_mut().values_mut() {
            if let Some(task) = service.task.take() {
                // Dropping the task's future drops the `Child`, whose
                // `kill_on_drop` covers a child spawned after the loop above.
                task.abort();
            }
        }
    }
}

fn lock_map(
    map: &Mutex<HashMap<String, Arc<Shared>>>,
) -> MutexGuard<'_, HashMap<String, Arc<Shared>>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `signal` to the child's process group (the child leads it).
fn kill_group(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::Error::EINVAL)?;
    killpg(Pid::from_raw(pid), signal)
}

/// The task owning one service's child. See the state diagram in the module docs.
async fn supervise(
    spec: ServiceSpec,
    log_file: PathBuf,
    child: Child,
    shared: Arc<Shared>,
    mut stop_rx: oneshot::Receiver<oneshot::Sender<()>>,
    stop_timeout: Duration,
) {
    let name = spec.name.clone();
    let restart_delay = Duration::from_secs(u64::from(spec.restart_sec));
    let mut child = Some(child);
    loop {
        match child.as_mut() {
            Some(running) => {
                tokio::select! {
                    exit = running.wait() => {
                        let reason = describe_exit(exit);
                        warn!(service = %name, %reason, restart_sec = spec.restart_sec, "service exited; restarting");
                        let mut status = shared.lock();
                        status.pid = None;
                        status.state = ServiceState::Activating;
                        status.last_exit = Some(reason);
                        drop(status);
                        child = None;
                    }
                    request = &mut stop_rx => {
                        // Active → Deactivating → Inactive
                        shared.lock().state = ServiceState::Deactivating;
                        terminate(&name, running, stop_timeout).await;
                        let mut status = shared.lock();
                        status.pid = None;
                        status.state = ServiceState::Inactive;
                        drop(status);
                        if let Ok(done) = request {
                            let _ = done.send(());
                        }
                        return;
                    }
                }
            }
            None => {
                // Activating (auto-restart) or Failed: wait restart_sec, then spawn.
                tokio::select! {
                    () = tokio::time::sleep(restart_delay) => {}
                    request = &mut stop_rx => {
                        shared.lock().state = ServiceState::Inactive;
                        if let Ok(done) = request {
                            let _ = done.send(());
                        }
                        return;
                    }
                }
                match spawn_child(&spec, &log_file) {
                    Ok(new) => {
                        let mut status = shared.lock();
                        status.pid = new.id();
                        status.state = ServiceState::Active;
                        status.restarts += 1;
                        info!(service = %name, pid = ?new.id(), restarts = status.restarts, "restarted service");
                        child = Some(new);
                    }
                    Err(error) => {
                        warn!(service = %name, %error, "restarting service failed; retrying");
                        shared.lock().state = ServiceState::Failed {
                            reason: error.to_string(),
                        };
                    }
                }
            }
        }
    }
}

/// SIGTERM to the child's group, SIGKILL after `timeout`, then reap it.
async fn terminate(name: &str, child: &mut Child, timeout: Duration) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    if let Err(error) = kill_group(pid, Signal::SIGTERM) {
        debug!(service = %name, pid, %error, "SIGTERM failed (already gone?)");
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(exit) => debug!(service = %name, reason = %describe_exit(exit), "service stopped"),
        Err(_) => {
            warn!(service = %name, pid, ?timeout, "service ignored SIGTERM; sending SIGKILL");
            if let Err(error) = kill_group(pid, Signal::SIGKILL) {
                debug!(service = %name, pid, %error, "SIGKILL failed (already gone?)");
            }
            if let Err(error) = child.wait().await {
                warn!(service = %name, pid, %error, "waiting for the killed service failed");
            }
        }
    }
}

fn describe_exit(exit: std::io::Result<ExitStatus>) -> String {
    match exit {
        Ok(status) => status.to_string(),
        Err(error) => format!("cannot wait for the process: {error}"),
    }
}

/// Spawns the service's program with its environment, user and working
/// directory, output appended to `log_file`.
fn spawn_child(spec: &ServiceSpec, log_file: &Path) -> Result<Child, SupervisorError> {
    let open_log_error = |source| SupervisorError::OpenLog {
        name: spec.name.clone(),
        path: log_file.to_path_buf(),
        source,
    };
    if let Some(dir) = log_file.parent() {
        std::fs::create_dir_all(dir).map_err(open_log_error)?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .map_err(open_log_error)?;
    writeln!(log, "--- supervisor: starting {:?}", spec.exec).map_err(open_log_error)?;
    let stderr = log.try_clone().map_err(open_log_error)?;

    let program = &spec.exec[0];
    let mut command = Command::new(program);
    command
        .args(&spec.exec[1..])
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .kill_on_drop(true)
        // Its own group, so stop reaches the program's helpers too.
        .process_group(0);
    if let Some(dir) = &spec.working_dir {
        // Checked here: a failed chdir in the child reads like a missing program.
        let usable = std::fs::metadata(dir).and_then(|m| {
            if m.is_dir() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a directory"))
            }
        });
        if let Err(source) = usable {
            return Err(SupervisorError::WorkingDir {
                name: spec.name.clone(),
                path: dir.clone(),
                source,
            });
        }
        command.current_dir(dir);
    }
    if let Some(user) = &spec.user {
        let (uid, gid) = resolve_user(&spec.name, user)?;
        command.uid(uid).gid(gid);
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The agent may have died between fork and prctl: then no signal
            // will ever come, so do not start at all.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from(nix::Error::ESRCH));
            }
            Ok(())
        });
    }
    spawn_from_stable_thread(command).map_err(|source| SupervisorError::Spawn {
        name: spec.name.clone(),
        program: program.clone(),
        source,
    })
}

fn resolve_user(name: &str, user: &str) -> Result<(u32, u32), SupervisorError> {
    let error = |reason: String| SupervisorError::User {
        name: name.to_string(),
        user: user.to_string(),
        reason,
    };
    let found = if let Ok(uid) = user.parse::<u32>() {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
    } else {
        nix::unistd::User::from_name(user)
    };
    match found {
        Ok(Some(entry)) => Ok((entry.uid.as_raw(), entry.gid.as_raw())),
        Ok(None) => Err(error("no such user".into())),
        Err(errno) => Err(error(errno.to_string())),
    }
}

/// A spawn request for the spawner thread: the command, the runtime whose
/// process driver will reap the child, and where to send the result.
type SpawnRequest = (
    Command,
    tokio::runtime::Handle,
    std::sync::mpsc::SyncSender<std::io::Result<Child>>,
);

/// Forks `command` from a thread that never exits, so `PR_SET_PDEATHSIG`
/// fires only when the whole agent dies (see the module docs). The calling
/// task blocks for the duration of the fork (about a millisecond), as a
/// direct `spawn` would.
fn spawn_from_stable_thread(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Option<std::sync::mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("supervisor-spawner".into())
            .spawn(move || {
                for (mut command, runtime, reply) in rx {
                    let _context = runtime.enter();
                    // The requester may have given up; nothing to do then
                    // (dropping the child kills it: kill_on_drop).
                    let _ = reply.send(command.spawn());
                }
            });
        match started {
            Ok(_) => Some(tx),
            Err(error) => {
                warn!(%error, "cannot start the spawner thread: forking from the calling thread");
                None
            }
        }
    });
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let Some(spawner) = spawner else {
        return command.spawn();
    };
    let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
    if let Err(std::sync::mpsc::SendError((mut command, _, _))) =
        spawner.send((command, runtime, reply_tx))
    {
        return command.spawn();
    }
    reply_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread is gone")))
}
