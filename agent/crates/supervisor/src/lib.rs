#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
mod fake;
mod notify;
mod process;
mod spec;
mod systemd;
pub mod systemd1;
pub mod unit;

use std::path::PathBuf;

use async_trait::async_trait;

pub use error::SupervisorError;
pub use fake::{Call, FakeSupervisor, Op};
pub use notify::{notify_ready, notify_status, notify_stopping};
pub use process::{ProcessStatus, ProcessSupervisor, DEFAULT_PATH, DEFAULT_STOP_TIMEOUT};
pub use spec::{ServiceSpec, ServiceState, MAX_NAME_LEN};
pub use systemd::{map_state, SystemdSupervisor, DEFAULT_JOB_TIMEOUT, RUNTIME_UNIT_DIR};

/// Starts, stops and inspects long-running services.
///
/// `name` is always the bare service name (`etcd`, not `etcd.service`).
#[async_trait]
pub trait Supervisor: Send + Sync {
    /// Makes the service run with exactly this spec. Already running with the
    /// same spec: nothing happens. Running with a different spec: it is
    /// restarted with the new one. Returns once the service has been started
    /// (its program executed), not once it is ready to serve.
    async fn start(&self, spec: &ServiceSpec) -> Result<(), SupervisorError>;

    /// Stops the service and waits until it is gone. Stopping a service that
    /// is not running (or unknown) succeeds.
    async fn stop(&self, name: &str) -> Result<(), SupervisorError>;

    /// Stops and starts the service with its last spec.
    /// [`SupervisorError::UnknownService`] if it was never started.
    async fn restart(&self, name: &str) -> Result<(), SupervisorError>;

    /// The service's current state; `Inactive` for an unknown service.
    async fn state(&self, name: &str) -> Result<ServiceState, SupervisorError>;
}

/// One of the supervisors, chosen at run time (enum dispatch).
#[derive(Debug)]
pub enum AnySupervisor {
    /// systemd over D-Bus.
    Systemd(SystemdSupervisor),
    /// Children of the agent.
    Process(ProcessSupervisor),
    /// The recording fake.
    Fake(FakeSupervisor),
}

impl AnySupervisor {
    /// systemd when the machine was booted with it (`/run/systemd/system`
    /// exists, as `sd_booted(3)` checks) and its bus answers; otherwise a
    /// [`ProcessSupervisor`] logging to `log_dir`.
    pub async fn detect(log_dir: impl Into<PathBuf>) -> AnySupervisor {
        Self::detect_with(std::path::Path::new(RUNTIME_UNIT_DIR), log_dir).await
    }

    /// [`detect`](Self::detect) with the "booted with systemd" marker
    /// directory as a parameter.
    async fn detect_with(marker: &std::path::Path, log_dir: impl Into<PathBuf>) -> AnySupervisor {
        if marker.is_dir() {
            match SystemdSupervisor::connect().await {
                Ok(systemd) => return AnySupervisor::Systemd(systemd),
                Err(error) => tracing::warn!(
                    %error,
                    "booted with systemd but its bus is unreachable: supervising services as children"
                ),
            }
        }
        AnySupervisor::Process(ProcessSupervisor::new(log_dir))
    }

    /// Which backend this is: `systemd`, `process` or `fake`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnySupervisor::Systemd(_) => "systemd",
            AnySupervisor::Process(_) => "process",
            AnySupervisor::Fake(_) => "fake",
        }
    }

    fn inner(&self) -> &dyn Supervisor {
        match self {
            AnySupervisor::Systemd(s) => s,
            AnySupervisor::Process(s) => s,
            AnySupervisor::Fake(s) => s,
        }
    }
}

#[async_trait]
impl Supervisor for AnySupervisor {
    async fn start(&self, spec: &ServiceSpec) -> Result<(), SupervisorError> {
        self.inner().start(spec).await
    }

    async fn stop(&self, name: &str) -> Result<(), SupervisorError> {
        self.inner().stop(name).await
    }

    async fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        self.inner().restart(name).await
    }

    async fn state(&self, name: &str) -> Result<ServiceState, SupervisorError> {
        self.inner().state(name).await
    }
}

impl From<SystemdSupervisor> for AnySupervisor {
    fn from(s: SystemdSupervisor) -> Self {
        AnySupervisor::Systemd(s)
    }
}

impl From<ProcessSupervisor> for AnySupervisor {
    fn from(s: ProcessSupervisor) -> Self {
        AnySupervisor::Process(s)
    }
}

impl From<FakeSupervisor> for AnySupervisor {
    fn from(s: FakeSupervisor) -> Self {
        AnySupervisor::Fake(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_systemd_the_process_supervisor_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let any = AnySupervisor::detect_with(&dir.path().join("no-systemd"), dir.path()).await;
        assert_eq!(any.kind(), "process");
        let AnySupervisor::Process(process) = &any else {
            unreachable!("kind is process")
        };
        assert_eq!(process.log_dir(), dir.path());
    }

    #[tokio::test]
    async fn any_supervisor_dispatches_to_its_backend() {
        let any = AnySupervisor::from(FakeSupervisor::new());
        assert_eq!(any.kind(), "fake");
        let spec = ServiceSpec {
            name: "etcd".into(),
            exec: vec!["/usr/bin/etcd".into()],
            ..ServiceSpec::default()
        };
        any.start(&spec).await.unwrap();
        assert_eq!(any.state("etcd").await.unwrap(), ServiceState::Active);
        let AnySupervisor::Fake(fake) = &any else {
            unreachable!("constructed as fake")
        };
        assert_eq!(fake.calls()[0], Call::Start(spec));
    }
}
