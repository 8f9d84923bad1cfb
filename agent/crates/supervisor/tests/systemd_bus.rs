//! `SystemdSupervisor` through a real message bus (a private `dbus-daemon`)
//! with the fake Manager owning `org.freedesktop.systemd1`: signal match
//! rules, name ownership and routing as on a node, minus systemd itself.

mod common;

use common::Harness;
use supervisor::{ServiceSpec, ServiceState, Supervisor, SupervisorError};

fn etcd() -> ServiceSpec {
    ServiceSpec {
        name: "etcd".into(),
        description: "etcd".into(),
        exec: vec!["/usr/bin/etcd".into(), "--name=m1".into()],
        restart_sec: 5,
        ..ServiceSpec::default()
    }
}

#[tokio::test]
async fn lifecycle_over_a_message_bus() {
    let h = Harness::bus().await;
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
    assert_eq!(
        h.supervisor.state("etcd").await.unwrap(),
        ServiceState::Active
    );

    h.supervisor.start(&etcd()).await.unwrap();
    let mut changed = etcd();
    changed.exec.push("--debug".into());
    h.supervisor.start(&changed).await.unwrap();
    h.supervisor.stop("etcd").await.unwrap();
    assert_eq!(
        h.take_calls(),
        [
            "ListUnitsByNames etcd.service",
            "GetUnit etcd.service",
            "ListUnitsByNames etcd.service",
            "Reload",
            "ListUnitsByNames etcd.service",
            "RestartUnit etcd.service replace",
            "StopUnit etcd.service replace",
        ]
    );

    h.set_outcome("etcd.service", "failed");
    let err = h.supervisor.start(&etcd()).await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::JobFailed { result, state, .. }
            if result == "failed" && state == "failed/failed, Result=exit-code"),
        "{err:?}"
    );
    // Unknown units: stop is fine, restart is UnknownService.
    h.supervisor.stop("nothing").await.unwrap();
    assert!(matches!(
        h.supervisor.restart("nothing").await,
        Err(SupervisorError::UnknownService { .. })
    ));
}
