//! Typed zbus proxies for the parts of `org.freedesktop.systemd1` the agent
//! uses (see `org.freedesktop.systemd1(5)`).
//!
//! All calls are async: the blocking API must not be called from the agent's
//! tokio runtime.

// The #[proxy] macro generates items (signal argument structs, stream types)
// that cannot carry doc comments.
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};
use zbus::proxy;
use zbus::zvariant::{OwnedObjectPath, Type};

/// systemd's well-known bus name.
pub const DESTINATION: &str = "org.freedesktop.systemd1";
/// The manager object.
pub const MANAGER_PATH: &str = "/org/freedesktop/systemd1";

/// One entry of `ListUnits`/`ListUnitsByNames` (D-Bus `(ssssssouso)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct UnitListEntry {
    /// The unit name, e.g. `etcd.service`.
    pub name: String,
    /// Its description.
    pub description: String,
    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`.
    pub load_state: String,
    /// `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`.
    pub active_state: String,
    /// Unit-type specific state, e.g. `running`, `auto-restart`, `dead`.
    pub sub_state: String,
    /// The unit this one follows in state, or empty.
    pub following: String,
    /// The unit's object path.
    pub unit_path: OwnedObjectPath,
    /// The id of a queued job, or 0.
    pub job_id: u32,
    /// The type of the queued job, or empty.
    pub job_type: String,
    /// The object path of the queued job, or `/`.
    pub job_path: OwnedObjectPath,
}

/// `org.freedesktop.systemd1.Manager`.
#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub trait Manager {
    /// Asks systemd to send job and unit signals to this client.
    fn subscribe(&self) -> zbus::Result<()>;

    /// Enqueues a start job; returns the job's object path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Enqueues a stop job; returns the job's object path.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Enqueues a restart job; returns the job's object path.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Clears a unit's failed state (and its start rate limit).
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    /// Reloads all unit files (`systemctl daemon-reload`); returns when done.
    fn reload(&self) -> zbus::Result<()>;

    /// The object path of a loaded unit (`NoSuchUnit` if not loaded).
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// The object path of a unit, loading it from disk if needed.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// State of the named units, loaded or not (one call, no object per unit).
    fn list_units_by_names(&self, names: &[&str]) -> zbus::Result<Vec<UnitListEntry>>;

    /// A job finished; `result` is `done`, `canceled`, `timeout`, `failed`,
    /// `dependency` or `skipped`.
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

/// `org.freedesktop.systemd1.Unit`, on a unit's object path.
#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Unit {
    /// `active`, `activating`, `failed`, ...
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;

    /// e.g. `running`, `auto-restart`, `dead`.
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;

    /// `loaded`, `not-found`, ...
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;

    /// Whether the unit file changed on disk since systemd loaded it.
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
}

/// `org.freedesktop.systemd1.Service`, on a service unit's object path.
#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Service {
    /// Why the service last stopped: `success`, `exit-code`, `signal`,
    /// `timeout`, `core-dump`, `start-limit-hit`, ...
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
}
