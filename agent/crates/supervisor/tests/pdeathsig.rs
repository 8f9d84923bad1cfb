//! A child of the `ProcessSupervisor` dies when the agent is SIGKILLed
//! (`PR_SET_PDEATHSIG`), so the kill-and-restart tests leave no orphans.
//!
//! Custom harness (`harness = false`): the test re-runs this binary as a
//! helper "agent" (selected by an environment variable) that starts a
//! service and reports its pid; the test SIGKILLs the helper — no `Drop`,
//! no shutdown code runs — and checks the service died with it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use supervisor::{ProcessSupervisor, ServiceSpec, Supervisor};

const HELPER_ENV: &str = "SUPERVISOR_PDEATHSIG_HELPER_DIR";

fn main() {
    match std::env::var_os(HELPER_ENV) {
        Some(dir) => helper(Path::new(&dir)),
        None => {
            println!("\nrunning 1 test");
            the_service_dies_with_a_sigkilled_agent();
            println!("test the_service_dies_with_a_sigkilled_agent ... ok");
            println!("\ntest result: ok. 1 passed; 0 failed\n");
        }
    }
}

/// The helper "agent": starts `sleep`, writes its pid, waits to be killed.
fn helper(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let supervisor = ProcessSupervisor::new(dir.join("logs"));
        let spec = ServiceSpec {
            name: "orphan-candidate".into(),
            exec: vec!["sleep".into(), "1000".into()],
            ..ServiceSpec::default()
        };
        supervisor.start(&spec).await.expect("start the service");
        let pid = supervisor
            .status("orphan-candidate")
            .and_then(|s| s.pid)
            .expect("a running service has a pid");
        let tmp = dir.join("pid.tmp");
        std::fs::write(&tmp, pid.to_string()).expect("write pid");
        std::fs::rename(&tmp, dir.join("pid")).expect("publish pid");
        std::future::pending::<()>().await;
    });
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn the_service_dies_with_a_sigkilled_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = Command::new(std::env::current_exe().expect("own path"))
        .env(HELPER_ENV, dir.path())
        .spawn()
        .expect("spawn the helper agent");
    let pid_file = dir.path().join("pid");
    wait_for(
        "the helper to start its service",
        Duration::from_secs(30),
        || pid_file.exists(),
    );
    let service: u32 = std::fs::read_to_string(&pid_file)
        .expect("read pid")
        .parse()
        .expect("pid is a number");
    assert!(alive(service), "the service should be running");

    agent.kill().expect("SIGKILL the helper agent");
    agent.wait().expect("reap the helper agent");
    wait_for(
        "the service to die with its agent",
        Duration::from_secs(10),
        || !alive(service),
    );
}
