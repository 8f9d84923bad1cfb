//! `SystemdSupervisor` against a fake systemd Manager served by zbus on a
//! peer-to-peer connection (`UnixStream::pair()`, no bus).
//!
//! The fake records every Manager call and sends `JobRemoved` for a job
//! *before* replying to the call that created it (after a decoy signal for
//! another job), so the supervisor only passes if it opened the signal stream
//! before calling and matches the job path.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use supervisor::systemd1::{UnitListEntry, MANAGER_PATH};
use supervisor::unit::render;
use supervisor::{ServiceSpec, ServiceState, Supervisor, SupervisorError, SystemdSupervisor};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::{connection, interface, Connection, ObjectServer};

#[derive(Debug, Clone)]
struct UnitRecord {
    active: String,
    sub: String,
    result: String,
    need_reload: bool,
}

#[derive(Debug, Default)]
struct World {
    calls: Vec<String>,
    units: BTreeMap<String, UnitRecord>,
    /// Result of the next job per unit: "done", "failed", ..., or "hang"
    /// (never send JobRemoved). Default "done".
    outcomes: HashMap<String, String>,
    next_job: u32,
}

type Shared = Arc<Mutex<World>>;

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

struct Harness {
    supervisor: SystemdSupervisor,
    world: Shared,
    dir: tempfile::TempDir,
    _server: Connection,
}

impl Harness {
    async fn new() -> Harness {
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
        }
    }

    /// The calls recorded since the last `take_calls`.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.world.lock().unwrap().calls)
    }

    fn set_outcome(&self, unit: &str, outcome: &str) {
        self.world
            .lock()
            .unwrap()
            .outcomes
            .insert(unit.into(), outcome.into());
    }
}

fn etcd() -> ServiceSpec {
    ServiceSpec {
        name: "etcd".into(),
        description: "etcd".into(),
        exec: vec!["/usr/bin/etcd".into(), "--name=m1".into()],
        env: BTreeMap::new(),
        user: None,
        working_dir: None,
        after: vec![],
        restart_sec: 5,
    }
}

#[tokio::test]
async fn start_writes_unit_reloads_subscribes_then_starts() {
    let h = Harness::new().await;
    h.supervisor.start(&etcd()).await.unwrap();
    assert_eq!(
        h.take_calls(),
        [
            "Reload",
            "ListUnitsByNames etcd.service",
            "Subscribe",
            "StartUnit etcd.service replace",
        ]
    );
    let written = std::fs::read_to_string(h.dir.path().join("etcd.service")).unwrap();
    assert_eq!(written, render(&etcd()).unwrap());
    assert_eq!(
        h.supervisor.state("etcd").await.unwrap(),
        ServiceState::Active
    );
}

#[tokio::test]
async fn start_with_unchanged_unit_of_running_service_is_a_no_op() {
    let h = Harness::new().await;
    h.supervisor.start(&etcd()).await.unwrap();
    h.take_calls();
    h.supervisor.start(&etcd()).await.unwrap();
    assert_eq!(
        h.take_calls(),
        ["GetUnit etcd.service", "ListUnitsByNames etcd.service"],
        "no Reload, no job"
    );
}

#[tokio::test]
async fn changed_spec_rewrites_reloads_and_restarts() {
    let h = Harness::new().await;
    h.supervisor.start(&etcd()).await.unwrap();
    h.take_calls();
    let mut changed = etcd();
    changed.exec.push("--debug".into());
    h.supervisor.start(&changed).await.unwrap();
    assert_eq!(
        h.take_calls(),
        [
            "Reload",
            "ListUnitsByNames etcd.service",
            "RestartUnit etcd.service replace",
        ],
        "Subscribe once per connection"
    );
    let written = std::fs::read_to_string(h.dir.path().join("etcd.service")).unwrap();
    assert!(written.contains("--debug"));
}

#[tokio::test]
async fn unit_needing_reload_is_reloaded_and_restarted_even_if_file_unchanged() {
    // A previous start wrote the file, then its Reload failed.
    let h = Harness::new().await;
    h.supervisor.start(&etcd()).await.unwrap();
    h.world
        .lock()
        .unwrap()
        .units
        .get_mut("etcd.service")
        .unwrap()
        .need_reload = true;
    h.take_calls();
    h.supervisor.start(&etcd()).await.unwrap();
    assert_eq!(
        h.take_calls(),
        [
            "GetUnit etcd.service",
            "Reload",
            "ListUnitsByNames etcd.service",
            "RestartUnit etcd.service replace",
        ]
    );
}

#[tokio::test]
async fn failed_job_is_an_error_with_result_and_unit_state() {
    let h = Harness::new().await;
    h.set_outcome("etcd.service", "failed");
    let err = h.supervisor.start(&etcd()).await.unwrap_err();
    match &err {
        SupervisorError::JobFailed {
            method,
            unit,
            job,
            result,
            state,
        } => {
            assert_eq!(*method, "StartUnit");
            assert_eq!(unit, "etcd.service");
            assert!(job.starts_with("/org/freedesktop/systemd1/job/"), "{job}");
            assert_eq!(result, "failed");
            assert_eq!(state, "failed/failed, Result=exit-code");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("result \"failed\""), "{err}");
    assert_eq!(
        h.supervisor.state("etcd").await.unwrap(),
        ServiceState::Failed {
            reason: "failed, result exit-code".into()
        }
    );

    // A failed unit is reset before it is started again.
    h.take_calls();
    h.supervisor.start(&etcd()).await.unwrap();
    assert_eq!(
        h.take_calls(),
        [
            "GetUnit etcd.service",
            "ListUnitsByNames etcd.service",
            "ResetFailedUnit etcd.service",
            "StartUnit etcd.service replace",
        ]
    );
}

#[tokio::test]
async fn timeout_and_dependency_results_are_errors() {
    let h = Harness::new().await;
    h.set_outcome("etcd.service", "timeout");
    let err = h.supervisor.start(&etcd()).await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::JobFailed { result, .. } if result == "timeout"),
        "{err:?}"
    );
    h.set_outcome("etcd.service", "dependency");
    let err = h.supervisor.restart("etcd").await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::JobFailed { method: "RestartUnit", result, .. } if result == "dependency"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_job_that_never_finishes_hits_the_safety_timeout() {
    let mut h = Harness::new().await;
    h.supervisor = h.supervisor.with_job_timeout(Duration::from_millis(300));
    h.set_outcome("etcd.service", "hang");
    let err = h.supervisor.start(&etcd()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            SupervisorError::JobTimeout {
                method: "StartUnit",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn stop_and_restart() {
    let h = Harness::new().await;
    // Stopping a unit systemd does not know succeeds.
    h.supervisor.stop("etcd").await.unwrap();
    // Restarting one is an UnknownService error.
    let err = h.supervisor.restart("etcd").await.unwrap_err();
    assert!(
        matches!(err, SupervisorError::UnknownService { ref name } if name == "etcd"),
        "{err:?}"
    );

    h.supervisor.start(&etcd()).await.unwrap();
    h.take_calls();
    h.supervisor.stop("etcd").await.unwrap();
    assert_eq!(
        h.supervisor.state("etcd").await.unwrap(),
        ServiceState::Inactive
    );
    h.supervisor.restart("etcd").await.unwrap();
    assert_eq!(
        h.supervisor.state("etcd").await.unwrap(),
        ServiceState::Active
    );
    assert_eq!(
        h.take_calls(),
        [
            "StopUnit etcd.service replace",
            "ListUnitsByNames etcd.service",
            "RestartUnit etcd.service replace",
            "ListUnitsByNames etcd.service",
        ]
    );
}

#[tokio::test]
async fn invalid_specs_never_reach_systemd() {
    let h = Harness::new().await;
    let mut bad = etcd();
    bad.exec[0] = "-/usr/bin/etcd".into();
    assert!(matches!(
        h.supervisor.start(&bad).await,
        Err(SupervisorError::InvalidSpec { .. })
    ));
    assert!(matches!(
        h.supervisor.stop("../x").await,
        Err(SupervisorError::InvalidSpec { .. })
    ));
    assert!(h.take_calls().is_empty());
    assert!(std::fs::read_dir(h.dir.path()).unwrap().next().is_none());
}
