//! A fake systemd Manager (with Unit and Service objects) served by zbus,
//! reachable over a peer-to-peer connection or a private `dbus-daemon`.
//!
//! The fake records every Manager call and sends `JobRemoved` for a job
//! *before* replying to the call that created it (after a decoy signal for
//! another job), so the supervisor only passes if it opened the signal stream
//! before calling and matches the job path.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use supervisor::systemd1::{UnitListEntry, MANAGER_PATH};
use supervisor::SystemdSupervisor;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::{connection, interface, Connection, ObjectServer};

#[derive(Debug, Clone)]
pub struct UnitRecord {
    pub active: String,
    pub sub: String,
    pub result: String,
    pub need_reload: bool,
}

#[derive(Debug, Default)]
pub struct World {
    pub calls: Vec<String>,
    pub units: BTreeMap<String, UnitRecord>,
    /// Result of the next job per unit: "done", "failed", ..., or "hang"
    /// (never send JobRemoved). Default "done".
    pub outcomes: HashMap<String, String>,
    pub next_job: u32,
}

pub type Shared = Arc<Mutex<World>>;

fn unit_path(unit: &str) -> OwnedObjectPath {
    let escaped: String = unit
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect();
    OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/unit/{escaped}")).unwrap()
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum SdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchUnit(String),
}

struct FakeManager {
    world: Shared,
}

impl FakeManager {
    fn log(&self, call: String) {
        self.world.lock().unwrap().calls.push(call);
    }

    async fn job(
        &self,
        kind: &str,
        unit: String,
        mode: String,
        emitter: SignalEmitter<'_>,
        server: &ObjectServer,
    ) -> Result<OwnedObjectPath, SdError> {
        self.log(format!("{kind} {unit} {mode}"));
        let (id, outcome, known) = {
            let mut world = self.world.lock().unwrap();
            world.next_job += 1;
            let outcome = world
                .outcomes
                .remove(&unit)
                .unwrap_or_else(|| "done".into());
            let known = world.units.contains_key(&unit);
            (world.next_job, outcome, known)
        };
        if kind == "StopUnit" && !known {
            return Err(SdError::NoSuchUnit(format!("Unit {unit} not loaded.")));
        }
        if kind == "RestartUnit" && !known && outcome != "load" {
            return Err(SdError::NoSuchUnit(format!("Unit {unit} not found.")));
        }
        {
            let mut world = self.world.lock().unwrap();
            let record = world.units.entry(unit.clone()).or_insert(UnitRecord {
                active: "inactive".into(),
                sub: "dead".into(),
                result: "success".into(),
                need_reload: false,
            });
            match (kind, outcome.as_str()) {
                ("StopUnit", _) => {
                    record.active = "inactive".into();
                    record.sub = "dead".into();
                }
                (_, "done") => {
                    record.active = "active".into();
                    record.sub = "running".into();
                }
                (_, "hang") => {
                    record.active = "activating".into();
                    record.sub = "start".into();
                }
                _ => {
                    record.active = "failed".into();
                    record.sub = "failed".into();
                    record.result = "exit-code".into();
                }
            }
        }
        let path = unit_path(&unit);
        server
            .at(
                &path,
                FakeUnit {
                    world: self.world.clone(),
                    unit: unit.clone(),
                },
            )
            .await?;
        server
            .at(
                &path,
                FakeService {
                    world: self.world.clone(),
                    unit: unit.clone(),
                },
            )
            .await?;
        let job = OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}")).unwrap();
        // A decoy for someone else's job first, then ours, both before the reply.
        Self::job_removed(
            &emitter,
            id + 1000,
            ObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{}", id + 1000)).unwrap(),
            "other.service",
            "failed",
        )
        .await?;
        if outcome != "hang" {
            Self::job_removed(&emitter, id, job.as_ref(), &unit, &outcome).await?;
        }
        Ok(job)
    }
}

#[interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeManager {
    async fn subscribe(&self) {
        self.log("Subscribe".into());
    }

    async fn reload(&self) {
        self.log("Reload".into());
        for record in self.world.lock().unwrap().units.values_mut() {
            record.need_reload = false;
        }
    }

    async fn start_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, SdError> {
        self.job("StartUnit", name, mode, emitter, server).await
    }

    async fn stop_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, SdError> {
        self.job("StopUnit", name, mode, emitter, server).await
    }

    async fn restart_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, SdError> {
        self.job("RestartUnit", name, mode, emitter, server).await
    }

    async fn reset_failed_unit(&self, name: String) {
        self.log(format!("ResetFailedUnit {name}"));
    }

    async fn get_unit(&self, name: String) -> Result<OwnedObjectPath, SdError> {
        self.log(format!("GetUnit {name}"));
        if self.world.lock().unwrap().units.contains_key(&name) {
            Ok(unit_path(&name))
        } else {
            Err(SdError::NoSuchUnit(format!("Unit {name} not loaded.")))
        }
    }

    async fn list_units_by_names(&self, names: Vec<String>) -> Vec<UnitListEntry> {
        self.log(format!("ListUnitsByNames {}", names.join(",")));
        let world = self.world.lock().unwrap();
        names
            .into_iter()
            .map(|name| {
                let (load, active, sub) = match world.units.get(&name) {
                    Some(r) => ("loaded", r.active.clone(), r.sub.clone()),
                    None => ("not-found", "inactive".to_string(), "dead".to_string()),
                };
                UnitListEntry {
                    unit_path: unit_path(&name),
                    name,
                    description: String::new(),
                    load_state: load.into(),
                    active_state: active,
                    sub_state: sub,
                    following: String::new(),
                    job_id: 0,
                    job_type: String::new(),
                    job_path: OwnedObjectPath::try_from("/").unwrap(),
                }
            })
            .collect()
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

struct FakeUnit {
    world: Shared,
    unit: String,
}

impl FakeUnit {
    fn record(&self) -> UnitRecord {
        self.world.lock().unwrap().units[&self.unit].clone()
    }
}

#[interface(name = "org.freedesktop.systemd1.Unit")]
impl FakeUnit {
    #[zbus(property)]
    fn active_state(&self) -> String {
        self.record().active
    }

    #[zbus(property)]
    fn sub_state(&self) -> String {
        self.record().sub
    }

    #[zbus(property)]
    fn load_state(&self) -> String {
        "loaded".into()
    }

    #[zbus(property)]
    fn need_daemon_reload(&self) -> bool {
        self.record().need_reload
    }
}

struct FakeService {
    world: Shared,
    unit: String,
}

#[interface(name = "org.freedesktop.systemd1.Service")]
impl FakeService {
    #[zbus(property)]
    fn result(&self) -> String {
        self.world.lock().unwrap().units[&self.unit].result.clone()
    }
}

pub struct Harness {
    pub supervisor: SystemdSupervisor,
    pub world: Shared,
    pub dir: tempfile::TempDir,
    _server: Connection,
    _bus: Option<BusDaemon>,
}

impl Harness {
    /// The fake on a peer-to-peer connection.
    pub async fn p2p() -> Harness {
        let world = Shared::default();
        let (server_end, client_end) = tokio::net::UnixStream::pair().unwrap();
        let server = connection::Builder::unix_stream(server_end)
            .server(zbus::Guid::generate())
            .unwrap()
            .p2p()
            .serve_at(
                MANAGER_PATH,
                FakeManager {
                    world: world.clone(),
                },
            )
            .unwrap()
            .build();
        let client = connection::Builder::unix_stream(client_end).p2p().build();
        let (server, client) = tokio::try_join!(server, client).unwrap();
        Harness::finish(world, server, client, None).await
    }

    /// The fake owning `org.freedesktop.systemd1` on a private dbus-daemon,
    /// the supervisor a separate client of that bus.
    pub async fn bus() -> Harness {
        let world = Shared::default();
        let bus = BusDaemon::start().await;
        let server = connection::Builder::address(bus.address.as_str())
            .unwrap()
            .name(supervisor::systemd1::DESTINATION)
            .unwrap()
            .serve_at(
                MANAGER_PATH,
                FakeManager {
                    world: world.clone(),
                },
            )
            .unwrap()
            .build()
            .await
            .unwrap();
        let client = connection::Builder::address(bus.address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        Harness::finish(world, server, client, Some(bus)).await
    }

    async fn finish(
        world: Shared,
        server: Connection,
        client: Connection,
        bus: Option<BusDaemon>,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = SystemdSupervisor::with_connection(client, dir.path())
            .await
            .unwrap()
            .with_job_timeout(Duration::from_secs(10));
        Harness {
            supervisor,
            world,
            dir,
            _server: server,
            _bus: bus,
        }
    }

    /// The calls recorded since the last `take_calls`.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.world.lock().unwrap().calls)
    }

    pub fn set_outcome(&self, unit: &str, outcome: &str) {
        self.world
            .lock()
            .unwrap()
            .outcomes
            .insert(unit.into(), outcome.into());
    }
}

/// A private `dbus-daemon` on a socket in a temporary directory; killed on drop.
pub struct BusDaemon {
    pub address: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl BusDaemon {
    pub async fn start() -> BusDaemon {
        use std::io::BufRead as _;

        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bus.conf");
        let socket = dir.path().join("bus");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dbus-daemon ({e}): install the Debian package `dbus-daemon`")
            });
        let stdout = child.stdout.take().unwrap();
        // The daemon prints its address once it listens.
        let address = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        let address = address.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        BusDaemon {
            address,
            child,
            _dir: dir,
        }
    }
}

impl Drop for BusDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
