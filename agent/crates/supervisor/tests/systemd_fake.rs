//! `SystemdSupervisor` against a fake systemd Manager served by zbus on a
//! peer-to-peer connection (`UnixStream::pair()`, no bus). See `common` for
//! how the fake checks the order of subscription, call and signal.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Harness;
use supervisor::unit::render;
use supervisor::{ServiceSpec, ServiceState, Supervisor, SupervisorError};

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
    let h = Harness::p2p().await;
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
    let h = Harness::p2p().await;
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
    let h = Harness::p2p().await;
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
    let h = Harness::p2p().await;
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
    let h = Harness::p2p().await;
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
    let h = Harness::p2p().await;
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
    let mut h = Harness::p2p().await;
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
    let h = Harness::p2p().await;
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
    let h = Harness::p2p().await;
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
