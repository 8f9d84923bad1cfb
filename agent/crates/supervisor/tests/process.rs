//! `ProcessSupervisor` with real child processes (`/bin/sh`, `sleep`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use supervisor::{ProcessSupervisor, ServiceSpec, ServiceState, Supervisor, SupervisorError};

const WAIT: Duration = Duration::from_secs(15);

fn sh(name: &str, script: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        description: format!("test service {name}"),
        exec: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: BTreeMap::new(),
        user: None,
        working_dir: None,
        after: vec![],
        restart_sec: 0,
    }
}

/// Whether `pid` names a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // the state follows the parenthesised command name
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits until `check` holds, failing the test with `what` after [`WAIT`].
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

fn pid(supervisor: &ProcessSupervisor, name: &str) -> u32 {
    supervisor
        .status(name)
        .and_then(|s| s.pid)
        .unwrap_or_else(|| panic!("{name} has no pid"))
}

#[tokio::test]
async fn start_runs_the_program_with_its_env_and_logs_output() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    let mut spec = sh(
        "greeter",
        "echo \"greeting=$GREETING\"; echo \"cwd=$(pwd)\"; echo oops >&2; exec sleep 1000",
    );
    spec.env.insert("GREETING".into(), "hello world".into());
    spec.working_dir = Some(work.path().to_path_buf());
    assert_eq!(
        supervisor.state("greeter").await.unwrap(),
        ServiceState::Inactive
    );
    supervisor.start(&spec).await.unwrap();
    assert_eq!(
        supervisor.state("greeter").await.unwrap(),
        ServiceState::Active
    );
    wait_for("the log", || {
        log(dir.path(), "greeter").contains("\noops\n")
    })
    .await;
    let text = log(dir.path(), "greeter");
    assert!(
        text.starts_with("--- supervisor: starting [\"/bin/sh\""),
        "{text}"
    );
    assert!(text.contains("\ngreeting=hello world\n"), "{text}");
    assert!(
        text.contains(&format!("\ncwd={}\n", work.path().display())),
        "{text}"
    );
    assert!(alive(pid(&supervisor, "greeter")));
}

#[tokio::test]
async fn the_environment_is_the_spec_env_plus_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    let spec = ServiceSpec {
        name: "env".into(),
        exec: vec!["/usr/bin/env".into()],
        env: BTreeMap::from([("GREETING".into(), "hello world".into())]),
        restart_sec: 1000,
        ..ServiceSpec::default()
    };
    supervisor.start(&spec).await.unwrap();
    wait_for("env to exit", || {
        supervisor
            .status("env")
            .is_some_and(|s| s.last_exit.is_some())
    })
    .await;
    let text = log(dir.path(), "env");
    let body = text.split_once('\n').map_or("", |(_, body)| body);
    assert_eq!(
        body,
        format!("GREETING=hello world\nPATH={}\n", supervisor::DEFAULT_PATH),
        "the agent's environment (NOTIFY_SOCKET, ...) must not leak"
    );
}

#[tokio::test]
async fn start_is_idempotent_and_a_changed_spec_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    let spec = sh("idem", "exec sleep 1000");
    supervisor.start(&spec).await.unwrap();
    let first = pid(&supervisor, "idem");
    supervisor.start(&spec).await.unwrap();
    assert_eq!(pid(&supervisor, "idem"), first, "same spec: same process");

    let mut changed = spec.clone();
    changed.exec[2] = "exec sleep 999".into();
    supervisor.start(&changed).await.unwrap();
    let second = pid(&supervisor, "idem");
    assert_ne!(second, first, "changed spec: new process");
    wait_for("the old process to be gone", || !alive(first)).await;
    assert!(alive(second));
    assert_eq!(
        supervisor.status("idem").unwrap().restarts,
        0,
        "not a crash"
    );
}

#[tokio::test]
async fn a_crashed_service_is_restarted_after_restart_sec() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    let marker = dir.path().join("crashed-once");
    // Crashes on its first run, stays up on the second.
    let mut spec = sh(
        "crashy",
        &format!(
            "if [ -e {m} ]; then echo second run; exec sleep 1000; fi; touch {m}; echo first run; exit 3",
            m = marker.display()
        ),
    );
    spec.restart_sec = 1;
    let started = Instant::now();
    supervisor.start(&spec).await.unwrap();
    wait_for("the restart", || {
        supervisor
            .status("crashy")
            .is_some_and(|s| s.restarts == 1 && s.pid.is_some())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "restart_sec was not honoured"
    );
    let status = supervisor.status("crashy").unwrap();
    assert_eq!(status.state, ServiceState::Active);
    assert_eq!(status.last_exit.as_deref(), Some("exit status: 3"));
    wait_for("the second run's output", || {
        log(dir.path(), "crashy").contains("\nsecond run\n")
    })
    .await;
    let text = log(dir.path(), "crashy");
    assert_eq!(
        text.matches("--- supervisor: starting").count(),
        2,
        "{text}"
    );
    assert!(text.contains("\nfirst run\n"), "{text}");
}

#[tokio::test]
async fn stop_terminates_and_kills_what_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Generous for the polite service (a loaded machine must not turn its
    // SIGTERM exit into a SIGKILL), short for the stubborn one.
    let supervisor = ProcessSupervisor::new(dir.path()).with_stop_timeout(Duration::from_secs(5));
    let impatient_logs = dir.path().join("impatient");
    let impatient =
        ProcessSupervisor::new(&impatient_logs).with_stop_timeout(Duration::from_millis(500));

    supervisor
        .start(&sh("polite", "exec sleep 1000"))
        .await
        .unwrap();
    let polite = pid(&supervisor, "polite");
    let t = Instant::now();
    supervisor.stop("polite").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "SIGTERM should suffice"
    );
    assert!(!alive(polite));
    assert_eq!(
        supervisor.state("polite").await.unwrap(),
        ServiceState::Inactive
    );
    // stopping again, or something unknown, is fine
    supervisor.stop("polite").await.unwrap();
    supervisor.stop("never-started").await.unwrap();

    impatient
        .start(&sh(
            "stubborn",
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        ))
        .await
        .unwrap();
    let stubborn = pid(&impatient, "stubborn");
    wait_for("the trap to be set", || {
        log(&impatient_logs, "stubborn").contains("\nready\n")
    })
    .await;
    let t = Instant::now();
    impatient.stop("stubborn").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "SIGKILL came before the timeout"
    );
    assert!(!alive(stubborn));

    // A stopped service can be started again, and restarted.
    supervisor.restart("polite").await.unwrap();
    let again = pid(&supervisor, "polite");
    assert!(alive(again));
    supervisor.restart("polite").await.unwrap();
    assert_ne!(pid(&supervisor, "polite"), again);
}

#[tokio::test]
async fn stop_reaches_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    let pidfile = dir.path().join("helper.pid");
    let script = format!("sleep 1000 & echo $! > {p}; wait", p = pidfile.display());
    supervisor.start(&sh("parent", &script)).await.unwrap();
    wait_for("the helper pid", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let helper: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(helper));
    supervisor.stop("parent").await.unwrap();
    wait_for("the helper to be gone", || !alive(helper)).await;
}

#[tokio::test]
async fn dropping_the_supervisor_kills_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    supervisor.start(&sh("a", "exec sleep 1000")).await.unwrap();
    supervisor.start(&sh("b", "exec sleep 1001")).await.unwrap();
    let pids = [pid(&supervisor, "a"), pid(&supervisor, "b")];
    assert!(pids.iter().all(|&p| alive(p)));
    drop(supervisor);
    wait_for("both children to die", || pids.iter().all(|&p| !alive(p))).await;
}

#[tokio::test]
async fn shutdown_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    supervisor.start(&sh("a", "exec sleep 1000")).await.unwrap();
    supervisor.start(&sh("b", "exec sleep 1001")).await.unwrap();
    let pids = [pid(&supervisor, "a"), pid(&supervisor, "b")];
    supervisor.shutdown().await;
    assert!(pids.iter().all(|&p| !alive(p)));
    assert_eq!(supervisor.state("a").await.unwrap(), ServiceState::Inactive);
}

#[tokio::test]
async fn spawn_failures_and_bad_requests_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    let mut missing = sh("missing", "");
    missing.exec = vec!["/nonexistent/program".into()];
    let err = supervisor.start(&missing).await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Spawn { name, program, .. } if name == "missing" && program == "/nonexistent/program"),
        "{err:?}"
    );
    assert!(matches!(
        supervisor.state("missing").await.unwrap(),
        ServiceState::Failed { .. }
    ));
    supervisor.stop("missing").await.unwrap();
    assert_eq!(
        supervisor.state("missing").await.unwrap(),
        ServiceState::Inactive
    );

    let mut nobody = sh("nobody", "exit 0");
    nobody.user = Some("no-such-user-kubeboot".into());
    let err = supervisor.start(&nobody).await.unwrap_err();
    assert!(matches!(err, SupervisorError::User { .. }), "{err:?}");

    let mut nowhere = sh("nowhere", "exit 0");
    nowhere.working_dir = Some(dir.path().join("missing"));
    let err = supervisor.start(&nowhere).await.unwrap_err();
    assert!(matches!(err, SupervisorError::WorkingDir { .. }), "{err:?}");

    let err = supervisor.restart("unknown").await.unwrap_err();
    assert!(
        matches!(err, SupervisorError::UnknownService { .. }),
        "{err:?}"
    );

    let err = supervisor
        .start(&sh("../escape", "exit 0"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SupervisorError::InvalidSpec { .. }),
        "{err:?}"
    );

    // The log directory cannot be created under a regular file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let blocked = ProcessSupervisor::new(&file);
    let err = blocked.start(&sh("x", "exit 0")).await.unwrap_err();
    assert!(matches!(err, SupervisorError::OpenLog { .. }), "{err:?}");
}

#[tokio::test]
async fn a_failed_respawn_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    // The program is a symlink to /bin/sh that the test removes and restores
    // (a symlink, not a written script: exec'ing a file just written races
    // with forks in parallel tests and fails with ETXTBSY).
    let link = dir.path().join("prog");
    let marker = dir.path().join("stay-up");
    std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    let mut spec = sh("flaky", "");
    spec.exec = vec![
        link.display().to_string(),
        "-c".into(),
        format!("[ -e {} ] && exec sleep 1000; exit 1", marker.display()),
    ];
    spec.restart_sec = 1;
    supervisor.start(&spec).await.unwrap();
    // Gone after its first exit: the respawn fails and is reported.
    std::fs::remove_file(&link).unwrap();
    wait_for("a failed respawn", || {
        matches!(
            supervisor.status("flaky").map(|s| s.state),
            Some(ServiceState::Failed { .. })
        )
    })
    .await;
    // Back: the retry starts it again.
    std::fs::write(&marker, "").unwrap();
    std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    wait_for("the retry to succeed", || {
        supervisor
            .status("flaky")
            .is_some_and(|s| s.state == ServiceState::Active && s.pid.is_some_and(alive))
    })
    .await;
}

#[tokio::test]
async fn stop_during_the_restart_delay_cancels_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = ProcessSupervisor::new(dir.path());
    let mut spec = sh("quitter", "exit 7");
    spec.restart_sec = 1000;
    supervisor.start(&spec).await.unwrap();
    wait_for("the exit", || {
        supervisor
            .status("quitter")
            .is_some_and(|s| s.last_exit.is_some())
    })
    .await;
    let status = supervisor.status("quitter").unwrap();
    assert_eq!(status.state, ServiceState::Activating, "waiting to restart");
    assert_eq!(status.pid, None);
    assert_eq!(status.last_exit.as_deref(), Some("exit status: 7"));
    let t = Instant::now();
    supervisor.stop("quitter").await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(
        supervisor.state("quitter").await.unwrap(),
        ServiceState::Inactive
    );
    assert_eq!(supervisor.status("quitter").unwrap().restarts, 0);
}

#[test]
fn children_outlive_the_thread_that_started_them() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits. Start from a
    // blocking-pool thread that exits 50 ms after going idle: the child must
    // survive it, and die only with the supervisor.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(Duration::from_millis(50))
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let supervisor = std::sync::Arc::new(ProcessSupervisor::new(dir.path()));
    let handle = runtime.handle().clone();
    let started = supervisor.clone();
    runtime
        .block_on(async move {
            tokio::task::spawn_blocking(move || {
                handle.block_on(started.start(&sh("survivor", "exec sleep 1000")))
            })
            .await
        })
        .unwrap()
        .unwrap();
    let child = pid(&supervisor, "survivor");
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(child), "killed when its forking thread exited");
    drop(supervisor);
    let deadline = Instant::now() + WAIT;
    while alive(child) {
        assert!(
            Instant::now() < deadline,
            "the child outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
