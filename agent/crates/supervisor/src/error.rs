//! The one error type of the [`Supervisor`](crate::Supervisor) trait.
//!
//! Every backend returns [`SupervisorError`], so the agent handles a failed
//! start the same way whether systemd or the process supervisor ran it. Each
//! variant names the operation that failed and carries the service or unit it
//! was about.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while starting, stopping or inspecting a service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The [`ServiceSpec`](crate::ServiceSpec) cannot be turned into a service.
    #[error("invalid service spec for {name:?}: {reason}")]
    InvalidSpec {
        /// The service name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// `restart` was asked for a service this supervisor never started.
    #[error("service {name:?} is not known to this supervisor (start it first)")]
    UnknownService {
        /// The service name.
        name: String,
    },

    /// Reading the current unit file (to compare contents) failed.
    #[error("cannot read unit file {path}: {source}")]
    ReadUnit {
        /// The unit file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Writing a unit file (atomically: temp file, fsync, rename) failed.
    #[error("cannot write unit file {path}: {source}")]
    WriteUnit {
        /// The unit file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Connecting to the system bus failed.
    #[error("cannot connect to the D-Bus system bus: {source}")]
    Connect {
        /// The underlying error (boxed: zbus errors are large).
        #[source]
        source: Box<zbus::Error>,
    },

    /// A D-Bus call to systemd failed.
    #[error("systemd D-Bus call {method} for unit {unit} failed: {source}")]
    Dbus {
        /// The D-Bus method or property, e.g. `StartUnit`.
        method: &'static str,
        /// The unit it was about (`-` for manager-wide calls such as `Reload`).
        unit: String,
        /// The underlying error (boxed: zbus errors are large).
        #[source]
        source: Box<zbus::Error>,
    },

    /// A systemd job finished with a result other than `done`.
    #[error("systemd {method} job {job} for unit {unit} finished with result {result:?} (unit is {state})")]
    JobFailed {
        /// `StartUnit`, `StopUnit` or `RestartUnit`.
        method: &'static str,
        /// The unit.
        unit: String,
        /// The job's object path.
        job: String,
        /// systemd's job result: `failed`, `timeout`, `canceled`, `dependency`, `skipped`...
        result: String,
        /// The unit's state after the job, as far as it could be read
        /// (`ActiveState/SubState, Result=...`).
        state: String,
    },

    /// The job did not finish within the supervisor's safety timeout.
    #[error("systemd {method} job {job} for unit {unit} did not finish within {after:?}")]
    JobTimeout {
        /// `StartUnit`, `StopUnit` or `RestartUnit`.
        method: &'static str,
        /// The unit.
        unit: String,
        /// The job's object path.
        job: String,
        /// How long we waited.
        after: Duration,
    },

    /// The `JobRemoved` signal stream ended before our job's signal arrived
    /// (the bus connection closed).
    #[error(
        "D-Bus connection closed while waiting for systemd {method} job {job} for unit {unit}"
    )]
    SignalStreamEnded {
        /// `StartUnit`, `StopUnit` or `RestartUnit`.
        method: &'static str,
        /// The unit.
        unit: String,
        /// The job's object path.
        job: String,
    },

    /// Creating the log directory or opening a service's log file failed.
    #[error("cannot open log file {path} for service {name:?}: {source}")]
    OpenLog {
        /// The service.
        name: String,
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The user named in the spec does not exist or cannot be looked up.
    #[error("cannot resolve user {user:?} for service {name:?}: {reason}")]
    User {
        /// The service.
        name: String,
        /// The user name.
        user: String,
        /// Why it failed.
        reason: String,
    },

    /// The working directory of the spec is missing or not a directory.
    #[error("working directory {path} of service {name:?} is unusable: {source}")]
    WorkingDir {
        /// The service.
        name: String,
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Spawning the service's program failed.
    #[error("cannot spawn service {name:?} ({program}): {source}")]
    Spawn {
        /// The service.
        name: String,
        /// `exec[0]`.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Sending a signal to a child failed.
    #[error("cannot send {signal} to service {name:?} (pid {pid}): {source}")]
    Signal {
        /// The service.
        name: String,
        /// The process id.
        pid: i32,
        /// The signal, e.g. `SIGTERM`.
        signal: &'static str,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },

    /// The task supervising a child ended unexpectedly (it panicked or the
    /// runtime is shutting down).
    #[error("the supervising task of service {name:?} is gone")]
    TaskGone {
        /// The service.
        name: String,
    },

    /// A failure injected into [`FakeSupervisor`](crate::FakeSupervisor) by a test.
    #[error("injected failure for {op} of {name:?}: {message}")]
    Injected {
        /// The operation (`start`, `stop`, `restart`, `state`).
        op: &'static str,
        /// The service.
        name: String,
        /// The message the test asked for.
        message: String,
    },
}
