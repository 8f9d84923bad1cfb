//! [`SystemdSupervisor`]: services as systemd units, driven over D-Bus.
//!
//! `start(spec)`:
//!
//! 1. render the unit file ([`crate::unit::render`]) and compare it with
//!    `<unit_dir>/<name>.service`; if it differs, write it atomically (temp
//!    file, fsync, rename, fsync of the directory) and call `Reload`;
//! 2. read the unit's state (`ListUnitsByNames`); a unit that is up with an
//!    unchanged file is left alone (idempotent); a changed one that is up is
//!    restarted; otherwise it is started (after `ResetFailedUnit` if failed);
//! 3. a job is run by `Subscribe` (once per connection), opening the
//!    `JobRemoved` stream, *then* calling `StartUnit`/`RestartUnit`/`StopUnit`
//!    with mode `replace`, and waiting for the `JobRemoved` signal carrying
//!    the returned job path: no polling, no sleeping. Its result `done` is
//!    success; anything else is [`SupervisorError::JobFailed`] with the unit's
//!    state. Opening the stream before the call means a job that finishes
//!    before the call returns is not missed.
//!
//! A unit file written whose `Reload` then failed is caught on the next start
//! by the unit's `NeedDaemonReload` property, so the reload (and restart)
//! still happens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use tokio::sync::{Mutex, OnceCell};
use tracing::{debug, info, warn};
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

use crate::spec::validate_name;
use crate::systemd1::{ManagerProxy, ServiceProxy, UnitListEntry, UnitProxy};
use crate::unit::{render, unit_name};
use crate::{ServiceSpec, ServiceState, Supervisor, SupervisorError};

/// Where generated units go: the runtime unit directory (the root is read-only).
pub const RUNTIME_UNIT_DIR: &str = "/run/systemd/system";

/// Safety net for a job that never finishes (systemd's own start timeout,
/// 90 s by default, normally ends it first with result `timeout`).
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);

const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";

/// The job kinds the supervisor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Start,
    Stop,
    Restart,
}

impl Job {
    fn method(self) -> &'static str {
        match self {
            Job::Start => "StartUnit",
            Job::Stop => "StopUnit",
            Job::Restart => "RestartUnit",
        }
    }
}

/// Runs services as systemd units over D-Bus. See the module docs.
#[derive(Debug)]
pub struct SystemdSupervisor {
    connection: Connection,
    manager: ManagerProxy<'static>,
    unit_dir: PathBuf,
    job_timeout: Duration,
    subscribed: OnceCell<()>,
    /// Serialises lifecycle operations, so two starts never interleave
    /// writing, reloading and job submission.
    ops: Mutex<()>,
}

impl SystemdSupervisor {
    /// Connects to the system bus; units go to [`RUNTIME_UNIT_DIR`].
    pub async fn connect() -> Result<Self, SupervisorError> {
        let connection = Connection::system()
            .await
            .map_err(|source| SupervisorError::Connect {
                source: Box::new(source),
            })?;
        Self::with_connection(connection, RUNTIME_UNIT_DIR).await
    }

    /// Uses an existing connection (a peer-to-peer one to a fake systemd in
    /// tests) and writes units to `unit_dir`.
    pub async fn with_connection(
        connection: Connection,
        unit_dir: impl Into<PathBuf>,
    ) -> Result<Self, SupervisorError> {
        let manager = ManagerProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| SupervisorError::Dbus {
                method: "Manager proxy",
                unit: "-".into(),
                source: Box::new(source),
            })?;
        Ok(SystemdSupervisor {
            connection,
            manager,
            unit_dir: unit_dir.into(),
            job_timeout: DEFAULT_JOB_TIMEOUT,
            subscribed: OnceCell::new(),
            ops: Mutex::new(()),
        })
    }

    /// Sets the safety timeout for a job to finish.
    pub fn with_job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// The unit file of service `name`.
    pub fn unit_path(&self, name: &str) -> PathBuf {
        self.unit_dir.join(unit_name(name))
    }

    async fn ensure_subscribed(&self) -> Result<(), SupervisorError> {
        self.subscribed
            .get_or_try_init(|| async {
                match self.manager.subscribe().await {
                    Ok(()) => Ok(()),
                    Err(zbus::Error::MethodError(name, _, _))
                        if name.as_str() == ALREADY_SUBSCRIBED =>
                    {
                        Ok(())
                    }
                    Err(source) => Err(SupervisorError::Dbus {
                        method: "Subscribe",
                        unit: "-".into(),
                        source: Box::new(source),
                    }),
                }
            })
            .await
            .map(|_| ())
    }

    /// Runs one job and waits for its `JobRemoved` signal.
    async fn run_job(&self, job: Job, unit: &str) -> Result<(), SupervisorError> {
        let method = job.method();
        let dbus = |source| SupervisorError::Dbus {
            method,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        self.ensure_subscribed().await?;
        // The stream must exist before the call: the job can finish (and its
        // signal be sent) before the method reply arrives.
        let mut removed =
            self.manager
                .receive_job_removed()
                .await
                .map_err(|source| SupervisorError::Dbus {
                    method: "JobRemoved subscription",
                    unit: unit.to_string(),
                    source: Box::new(source),
                })?;
        let job_path = match job {
            Job::Start => self.manager.start_unit(unit, "replace").await,
            Job::Stop => self.manager.stop_unit(unit, "replace").await,
            Job::Restart => self.manager.restart_unit(unit, "replace").await,
        }
        .map_err(dbus)?;
        debug!(%unit, job = %job_path.as_str(), method, "job enqueued");
        let wait = async {
            while let Some(signal) = removed.next().await {
                match signal.args() {
                    Ok(args) if args.job == job_path => return Some(args.result),
                    Ok(_) => {}
                    Err(error) => warn!(%error, "ignoring a malformed JobRemoved signal"),
                }
            }
            None
        };
        let outcome = tokio::time::timeout(self.job_timeout, wait).await;
        let job = job_path.as_str().to_string();
        match outcome {
            Ok(Some(result)) if result == "done" => {
                info!(%unit, method, "job done");
                Ok(())
            }
            Ok(Some(result)) => Err(SupervisorError::JobFailed {
                method,
                unit: unit.to_string(),
                job,
                result,
                state: self.describe_unit(unit).await,
            }),
            Ok(None) => Err(SupervisorError::SignalStreamEnded {
                method,
                unit: unit.to_string(),
                job,
            }),
            Err(_) => Err(SupervisorError::JobTimeout {
                method,
                unit: unit.to_string(),
                job,
                after: self.job_timeout,
            }),
        }
    }

    /// The unit's list entry, or `None` if systemd does not know it.
    async fn unit_entry(&self, unit: &str) -> Result<Option<UnitListEntry>, SupervisorError> {
        let entries = self
            .manager
            .list_units_by_names(&[unit])
            .await
            .map_err(|source| SupervisorError::Dbus {
                method: "ListUnitsByNames",
                unit: unit.to_string(),
                source: Box::new(source),
            })?;
        Ok(entries
            .into_iter()
            .find(|e| e.name == unit && e.load_state != "not-found"))
    }

    /// The service's `Result` property (why it last stopped).
    async fn service_result(&self, path: &OwnedObjectPath) -> zbus::Result<String> {
        ServiceProxy::builder(&self.connection)
            .path(path.clone())?
            .cache_properties(CacheProperties::No)
            .build()
            .await?
            .result()
            .await
    }

    /// `ActiveState/SubState, Result=...` for error messages; best effort.
    async fn describe_unit(&self, unit: &str) -> String {
        match self.unit_entry(unit).await {
            Ok(Some(entry)) => {
                let result = self
                    .service_result(&entry.unit_path)
                    .await
                    .unwrap_or_else(|e| format!("unknown ({e})"));
                format!(
                    "{}/{}, Result={result}",
                    entry.active_state, entry.sub_state
                )
            }
            Ok(None) => "not loaded".into(),
            Err(error) => format!("unknown ({error})"),
        }
    }

    /// Whether systemd has an older version of the unit file loaded.
    async fn needs_reload(&self, unit: &str) -> Result<bool, SupervisorError> {
        let dbus = |method, source| SupervisorError::Dbus {
            method,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let path = match self.manager.get_unit(unit).await {
            Ok(path) => path,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == NO_SUCH_UNIT => {
                return Ok(false)
            }
            Err(source) => return Err(dbus("GetUnit", source)),
        };
        let proxy = UnitProxy::builder(&self.connection)
            .path(path)
            .map_err(|source| dbus("Unit proxy", source))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| dbus("Unit proxy", source))?;
        proxy
            .need_daemon_reload()
            .await
            .map_err(|source| dbus("NeedDaemonReload", source))
    }

    async fn reload(&self) -> Result<(), SupervisorError> {
        self.manager
            .reload()
            .await
            .map_err(|source| SupervisorError::Dbus {
                method: "Reload",
                unit: "-".into(),
                source: Box::new(source),
            })
    }
}

#[async_trait]
impl Supervisor for SystemdSupervisor {
    async fn start(&self, spec: &ServiceSpec) -> Result<(), SupervisorError> {
        let text = render(spec)?;
        let unit = unit_name(&spec.name);
        let path = self.unit_path(&spec.name);
        let _ops = self.ops.lock().await;

        let written = write_if_changed(path.clone(), text).await?;
        // A previous start may have written the file and then failed to reload.
        let stale = written || self.needs_reload(&unit).await?;
        if stale {
            info!(%unit, path = %path.display(), written, "unit file changed: reloading systemd");
            self.reload().await?;
        }
        let state = match self.unit_entry(&unit).await? {
            Some(entry) => map_state(&entry.active_state, &entry.sub_state, None),
            None => ServiceState::Inactive,
        };
        match (stale, state) {
            // up, unchanged → nothing to do
            (false, state) if state.is_up() => {
                debug!(%unit, "already running with the same unit file");
                Ok(())
            }
            // up, changed → restart
            (true, state) if state.is_up() => self.run_job(Job::Restart, &unit).await,
            // failed → reset, start
            (_, ServiceState::Failed { .. }) => {
                if let Err(error) = self.manager.reset_failed_unit(&unit).await {
                    debug!(%unit, %error, "ResetFailedUnit failed; starting anyway");
                }
                self.run_job(Job::Start, &unit).await
            }
            // inactive or deactivating → start
            _ => self.run_job(Job::Start, &unit).await,
        }
    }

    async fn stop(&self, name: &str) -> Result<(), SupervisorError> {
        validate_name(name)?;
        let unit = unit_name(name);
        let _ops = self.ops.lock().await;
        match self.run_job(Job::Stop, &unit).await {
            Err(error) if is_no_such_unit(&error) => Ok(()),
            other => other,
        }
    }

    async fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        validate_name(name)?;
        let unit = unit_name(name);
        let _ops = self.ops.lock().await;
        match self.run_job(Job::Restart, &unit).await {
            Err(error) if is_no_such_unit(&error) => Err(SupervisorError::UnknownService {
                name: name.to_string(),
            }),
            other => other,
        }
    }

    async fn state(&self, name: &str) -> Result<ServiceState, SupervisorError> {
        validate_name(name)?;
        let unit = unit_name(name);
        let Some(entry) = self.unit_entry(&unit).await? else {
            return Ok(ServiceState::Inactive);
        };
        let result = if entry.active_state == "failed" {
            self.service_result(&entry.unit_path).await.ok()
        } else {
            None
        };
        Ok(map_state(
            &entry.active_state,
            &entry.sub_state,
            result.as_deref(),
        ))
    }
}

/// Whether systemd answered `NoSuchUnit` (the unit is not loaded).
fn is_no_such_unit(error: &SupervisorError) -> bool {
    matches!(
        error,
        SupervisorError::Dbus { source, .. }
            if matches!(source.as_ref(), zbus::Error::MethodError(name, _, _) if name.as_str() == NO_SUCH_UNIT)
    )
}

/// Maps systemd's `ActiveState` (plus `SubState` and the service `Result`
/// for the failure reason) to a [`ServiceState`].
pub fn map_state(active_state: &str, sub_state: &str, result: Option<&str>) -> ServiceState {
    match active_state {
        "active" | "reloading" | "refreshing" => ServiceState::Active,
        // includes auto-restart: waiting RestartSec before starting again
        "activating" => ServiceState::Activating,
        "deactivating" => ServiceState::Deactivating,
        "inactive" => ServiceState::Inactive,
        "failed" => ServiceState::Failed {
            reason: match result {
                Some(result) => format!("{sub_state}, result {result}"),
                None => sub_state.to_string(),
            },
        },
        other => ServiceState::Failed {
            reason: format!("unknown ActiveState {other:?} ({sub_state})"),
        },
    }
}

/// Writes `text` to `path` atomically unless it already holds exactly that.
/// Returns whether it wrote.
async fn write_if_changed(path: PathBuf, text: String) -> Result<bool, SupervisorError> {
    tokio::task::spawn_blocking(move || write_if_changed_blocking(&path, &text))
        .await
        .map_err(|join| SupervisorError::WriteUnit {
            path: PathBuf::new(),
            source: std::io::Error::other(join.to_string()),
        })?
}

fn write_if_changed_blocking(path: &Path, text: &str) -> Result<bool, SupervisorError> {
    match std::fs::read(path) {
        Ok(existing) if existing == text.as_bytes() => return Ok(false),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SupervisorError::ReadUnit {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let write_error = |source| SupervisorError::WriteUnit {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| write_error(std::io::Error::other("unit path has no directory")))?;
    std::fs::create_dir_all(dir).map_err(write_error)?;
    atomic_file::write(path, text.as_bytes(), atomic_file::PUBLIC).map_err(write_error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_states_map_to_service_states() {
        let cases = [
            ("active", "running", None, ServiceState::Active),
            ("reloading", "reload", None, ServiceState::Active),
            ("activating", "auto-restart", None, ServiceState::Activating),
            ("activating", "start", None, ServiceState::Activating),
            (
                "deactivating",
                "stop-sigterm",
                None,
                ServiceState::Deactivating,
            ),
            ("inactive", "dead", None, ServiceState::Inactive),
            (
                "failed",
                "failed",
                Some("exit-code"),
                ServiceState::Failed {
                    reason: "failed, result exit-code".into(),
                },
            ),
            (
                "maintenance",
                "x",
                None,
                ServiceState::Failed {
                    reason: "unknown ActiveState \"maintenance\" (x)".into(),
                },
            ),
        ];
        for (active, sub, result, expected) in cases {
            assert_eq!(map_state(active, sub, result), expected, "{active}/{sub}");
        }
    }

    #[test]
    fn unit_files_are_written_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/etcd.service");
        assert!(write_if_changed_blocking(&path, "a\n").unwrap());
        assert!(!write_if_changed_blocking(&path, "a\n").unwrap());
        assert!(write_if_changed_blocking(&path, "b\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
        // no temp files left behind
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("etcd.service")]);
    }
}
