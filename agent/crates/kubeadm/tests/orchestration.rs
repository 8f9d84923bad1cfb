//! The kube phase end to end against a real etcd and a recording stand-in
//! for kubeadm (which writes the files a real kubeadm would leave): three
//! masters and a worker, each in its own root directory. Asserts the exact
//! commands and files each role gets, the single init, idempotence, the
//! reset of a half-done node, the backoff after a failure, the skip when
//! the image has no Kubernetes, and the token recreation.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use cluster_config::{ClusterSecret, Role};
use kubeadm::decide::Backoff;
use kubeadm::image::ImageKubernetes;
use kubeadm::paths::Paths;
use kubeadm::phase::{config_path, KubeContext, KubePhase, KubeStatus, ScriptedProbe};
use kubeadm::pki_files::SharedPki;
use kubeadm::runner::{Invocation, Program, Recorded, RecordingRunner, RunError, RunOutput};
use kubeadm::{BootstrapToken, CaPin, KubeadmInputs, PhaseState};

const CNI: &str = "/usr/lib/kubeboot/cni/flannel.yaml";

struct Cluster {
    pki: pki::ClusterPki,
    sa: pki::KeyPairPem,
    token: BootstrapToken,
    pin: CaPin,
}

fn cluster() -> Cluster {
    let secret = ClusterSecret::new("orchestration-test-secret-0123").unwrap();
    let pki = pki::ClusterPki::derive(&secret, "kubeboot").unwrap();
    let token = BootstrapToken::derive(&secret, "kubeboot").unwrap();
    let pin = CaPin::of(&pki.kubernetes_ca);
    let sa = pki::derive_service_account(&secret, "kubeboot").unwrap();
    Cluster {
        pki,
        sa,
        token,
        pin,
    }
}

fn master_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + i)
}

fn inputs(c: &Cluster, name: &str, ip: Ipv4Addr) -> KubeadmInputs {
    KubeadmInputs {
        cluster_name: "kubeboot".into(),
        kubernetes_version: None,
        node_name: name.into(),
        node_ip: ip,
        vip: Ipv4Addr::new(10, 77, 0, 10),
        api_port: 6443,
        apiserver_port: 6444,
        master_ips: (1..=3).map(master_ip).collect(),
        etcd_endpoints: (1..=3)
            .map(|i| format!("https://{}:2379", master_ip(i)))
            .collect(),
        pod_subnet: "10.244.0.0/16".parse().unwrap(),
        service_subnet: "10.96.0.0/12".parse().unwrap(),
        token: c.token.clone(),
        token_ttl: kubeadm::token::DEFAULT_TOKEN_TTL,
        ca_pin: c.pin.clone(),
        ignore_preflight_errors: vec![],
        image_pull_policy: Some("Never".into()),
        skip_addons: vec![],
        cni: cluster_config::CniMode::Auto,
        control_plane_args: Default::default(),
        patches: Default::default(),
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn image_manifest(root: &Path, present: bool) {
    let m = if present {
        ImageKubernetes {
            present: true,
            reason: None,
            version: Some("v1.31.4".into()),
            images_archive: None,
            cni_manifest: Some(CNI.into()),
            cni_pod_cidr: None,
            components: vec![],
        }
    } else {
        ImageKubernetes {
            present: false,
            reason: Some("built with --kubernetes none".into()),
            version: None,
            images_archive: None,
            cni_manifest: None,
            cni_pod_cidr: None,
            components: vec![],
        }
    };
    write(root, "usr/lib/kubeboot/kubernetes.toml", &m.to_toml());
}

/// A stand-in that leaves what `kubeadm init`/`join` leave: the kubelet's
/// config and kubeconfig (with a real client certificate from the cluster
/// CA), and on control-plane nodes admin.conf and the API server manifest.
fn stand_in(root: PathBuf, ca: pki::Ca, node: String) -> RecordingRunner {
    RecordingRunner::with_effect(Box::new(kubeadm_effect(root, ca, node)))
}

/// What the stand-in does for each call (see [`stand_in`]).
fn kubeadm_effect(
    root: PathBuf,
    ca: pki::Ca,
    node: String,
) -> impl Fn(&Invocation) -> Result<RunOutput, RunError> + Send + Sync + 'static {
    move |inv: &Invocation| {
        let sub = inv.args.first().map(String::as_str);
        if inv.program == Program::Kubeadm && matches!(sub, Some("init") | Some("join")) {
            let cert = ca
                .issue(&pki::LeafRequest {
                    common_name: format!("system:node:{node}"),
                    dns_names: vec![],
                    ips: vec![],
                    usage: pki::Usage::Client,
                    organization: Some("system:nodes".into()),
                })
                .map_err(|e| RunError::Spawn {
                    command: "stand-in".into(),
                    reason: e.to_string(),
                })?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(cert.cert_pem.as_bytes());
            write(
                &root,
                "var/lib/kubelet/config.yaml",
                "kind: KubeletConfiguration\n",
            );
            write(
                &root,
                "etc/kubernetes/kubelet.conf",
                &format!("apiVersion: v1\nkind: Config\nusers:\n- name: default-auth\n  user:\n    client-certificate-data: {b64}\n"),
            );
            let control_plane = sub == Some("init")
                || inv
                    .files
                    .iter()
                    .any(|f| f.contents.contains("controlPlane:"));
            if control_plane {
                write(&root, "etc/kubernetes/admin.conf", "kind: Config\n");
                write(
                    &root,
                    "etc/kubernetes/manifests/kube-apiserver.yaml",
                    "kind: Pod\n",
                );
            }
        }
        if inv.program == Program::Kubeadm && sub == Some("reset") {
            for rel in ["var/lib/kubelet/config.yaml", "etc/kubernetes/kubelet.conf"] {
                let _ = std::fs::remove_file(root.join(rel));
            }
            let _ = std::fs::remove_dir_all(root.join("etc/kubernetes/pki"));
        }
        Ok(RunOutput::default())
    }
}

struct Node {
    root: tempfile::TempDir,
    phase: KubePhase<RecordingRunner, ScriptedProbe>,
    runner: RecordingRunner,
    ctx: KubeContext,
}

async fn master(c: &Cluster, etcd: &common::EtcdGuard, i: u8) -> Node {
    let root = tempfile::tempdir().unwrap();
    image_manifest(root.path(), true);
    let name = format!("master-{i}");
    let runner = stand_in(
        root.path().to_owned(),
        c.pki.kubernetes_ca.clone(),
        name.clone(),
    );
    let client = common::client(etcd).await;
    let phase = KubePhase::new(
        Paths::under(root.path()),
        runner.clone(),
        probe(),
        Some(client),
    );
    let certs = pki::etcd_member_certs(&c.pki.etcd_ca, &name, &[master_ip(i).into()]).unwrap();
    let ctx = KubeContext {
        now: SystemTime::now(),
        role: Role::Master,
        node_id: format!("id-{i}"),
        inputs: inputs(c, &name, master_ip(i)),
        shared_pki: Some(SharedPki::from_cluster(
            &c.pki,
            &c.sa,
            &certs.apiserver_client,
        )),
        joiners_waiting: false,
    };
    Node {
        root,
        phase,
        runner,
        ctx,
    }
}

fn worker(c: &Cluster, name: &str) -> Node {
    let root = tempfile::tempdir().unwrap();
    image_manifest(root.path(), true);
    let runner = stand_in(
        root.path().to_owned(),
        c.pki.kubernetes_ca.clone(),
        name.into(),
    );
    let phase = KubePhase::new(Paths::under(root.path()), runner.clone(), probe(), None);
    let ctx = KubeContext {
        now: SystemTime::now(),
        role: Role::Worker,
        node_id: format!("id-{name}"),
        inputs: inputs(c, name, Ipv4Addr::new(10, 77, 0, 21)),
        shared_pki: None,
        joiners_waiting: false,
    };
    Node {
        root,
        phase,
        runner,
        ctx,
    }
}

/// The API behind the stand-in kubeadm: it answers (every step is
/// proven) unless a test says otherwise.
fn probe() -> ScriptedProbe {
    ScriptedProbe::proving()
}

fn args(r: &Recorded) -> Vec<&str> {
    r.args.iter().map(String::as_str).collect()
}

const SHARED_FILES: [(&str, u32); 9] = [
    ("etc/kubernetes/pki/ca.crt", 0o644),
    ("etc/kubernetes/pki/ca.key", 0o600),
    ("etc/kubernetes/pki/front-proxy-ca.crt", 0o644),
    ("etc/kubernetes/pki/front-proxy-ca.key", 0o600),
    ("etc/kubernetes/pki/sa.key", 0o600),
    ("etc/kubernetes/pki/sa.pub", 0o644),
    ("etc/kubernetes/pki/etcd/ca.crt", 0o644),
    ("etc/kubernetes/pki/apiserver-etcd-client.crt", 0o644),
    ("etc/kubernetes/pki/apiserver-etcd-client.key", 0o600),
];

fn assert_shared_pki(root: &Path, c: &Cluster) {
    for (rel, mode) in SHARED_FILES {
        let meta = std::fs::metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{rel}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kubernetes/pki/ca.key")).unwrap(),
        c.pki.kubernetes_ca.key_pem
    );
    assert!(
        !root.join("etc/kubernetes/pki/etcd/ca.key").exists(),
        "the etcd CA key must stay with the agent"
    );
}

/// Reconciles the three masters concurrently (interleaved on one task:
/// their etcd transactions race).
async fn reconcile_all(nodes: &mut [Node]) -> Vec<KubeStatus> {
    let [a, b, c] = nodes else {
        panic!("three masters expected")
    };
    let (ra, rb, rc) = tokio::join!(
        a.phase.reconcile(&a.ctx),
        b.phase.reconcile(&b.ctx),
        c.phase.reconcile(&c.ctx)
    );
    vec![ra.unwrap(), rb.unwrap(), rc.unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_and_a_worker_form_one_cluster() {
    let etcd = common::start_etcd("orch").await;
    let c = cluster();
    let mut masters = vec![
        master(&c, &etcd, 1).await,
        master(&c, &etcd, 2).await,
        master(&c, &etcd, 3).await,
    ];

    // Round 1, concurrently: exactly one master initialises; the others
    // wait, or (if the init finished before they read the marker, which
    // the instant stand-in allows) join right away.
    let st = reconcile_all(&mut masters).await;
    let init: Vec<usize> = (0..3).filter(|i| st[*i].is_init_node).collect();
    assert_eq!(init.len(), 1, "{st:?}");
    let w = init[0];
    let winner_id = masters[w].ctx.node_id.clone();
    for (i, s) in st.iter().enumerate() {
        assert_eq!(s.init_node.as_deref(), Some(winner_id.as_str()));
        if i == w {
            assert_eq!(s.phase, PhaseState::Ready);
            assert!(s.joined);
        } else if s.phase == PhaseState::Ready {
            let calls = masters[i].runner.calls();
            assert_eq!(calls.len(), 1, "{calls:?}");
            assert_eq!(args(&calls[0])[0], "join");
        } else if s.phase == PhaseState::Joining {
            // The other master held the join lock.
            assert!(masters[i].runner.calls().is_empty());
        } else {
            assert_eq!(
                s.phase,
                PhaseState::WaitingForInit {
                    init_node: winner_id.clone()
                }
            );
            assert!(
                masters[i].runner.calls().is_empty(),
                "a waiting master ran {:?}",
                masters[i].runner.calls()
            );
        }
    }
    // The init node: shared PKI placed, then exactly `kubeadm init` with
    // its configuration file, then the CNI.
    let calls = masters[w].runner.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].program, Program::Kubeadm);
    assert_eq!(
        args(&calls[0]),
        vec![
            "init",
            "--config",
            "/var/lib/kubeboot/kubeadm/init.yaml",
            "--skip-token-print"
        ]
    );
    let mut want_inputs = masters[w].ctx.inputs.clone();
    want_inputs.kubernetes_version = Some("v1.31.4".into());
    assert_eq!(calls[0].files.len(), 1);
    let (path, content, mode) = &calls[0].files[0];
    assert_eq!(
        path,
        &masters[w]
            .root
            .path()
            .join("var/lib/kubeboot/kubeadm/init.yaml")
    );
    assert_eq!(content, &want_inputs.render_init().unwrap());
    assert_eq!(*mode, 0o600);
    assert_eq!(calls[1].program, Program::Kubectl);
    assert_eq!(
        args(&calls[1]),
        vec![
            "--kubeconfig",
            "/etc/kubernetes/admin.conf",
            "apply",
            "-f",
            CNI
        ]
    );
    assert_shared_pki(masters[w].root.path(), &c);
    let mut client = common::client(&etcd).await;
    assert_eq!(
        kubeadm::election::init_done(&mut client)
            .await
            .unwrap()
            .as_deref(),
        Some(winner_id.as_str())
    );

    // Round 2 on: the others join as control-plane nodes, one at a time
    // (the join lock): in a round where both want to join, one runs
    // `kubeadm join` and the other stays `joining` without running it.
    let mut st = reconcile_all(&mut masters).await;
    for _ in 0..2 {
        if st.iter().all(|s| s.phase == PhaseState::Ready) {
            break;
        }
        for (i, s) in st.iter().enumerate() {
            if s.phase != PhaseState::Ready {
                assert_eq!(s.phase, PhaseState::Joining, "master {i}");
                assert!(masters[i].runner.calls().is_empty(), "master {i}");
            }
        }
        st = reconcile_all(&mut masters).await;
    }
    for (i, s) in st.iter().enumerate() {
        assert_eq!(s.phase, PhaseState::Ready, "master {i}");
        assert!(s.joined);
        if i == w {
            assert_eq!(
                masters[i].runner.calls().len(),
                2,
                "the init node ran kubeadm again"
            );
            continue;
        }
        let calls = masters[i].runner.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(
            args(&calls[0]),
            vec!["join", "--config", "/var/lib/kubeboot/kubeadm/join.yaml"]
        );
        let mut want = masters[i].ctx.inputs.clone();
        want.kubernetes_version = Some("v1.31.4".into());
        assert_eq!(
            calls[0].files[0].1,
            want.render_join_control_plane().unwrap()
        );
        assert!(calls[0].files[0].1.contains(c.pin.as_str()));
        assert_shared_pki(masters[i].root.path(), &c);
    }

    // Round 3: idempotent, nobody runs anything.
    for m in &masters {
        m.runner.clear();
    }
    let st = reconcile_all(&mut masters).await;
    for (i, s) in st.iter().enumerate() {
        assert_eq!(s.phase, PhaseState::Ready);
        assert!(
            masters[i].runner.calls().is_empty(),
            "master {i}: {:?}",
            masters[i].runner.calls()
        );
    }

    // A new agent process on the init node (in-memory state lost): still
    // no kubeadm, the CNI is applied again (idempotent kubectl apply).
    // This image records that its manifest ships another pod CIDR than
    // the cluster's: a copy with the cluster's CIDR is applied instead.
    let root = masters[w].root.path();
    let pod_subnet = masters[w].ctx.inputs.pod_subnet.to_string();
    write(
        root,
        CNI.trim_start_matches('/'),
        "net-conf.json: |\n  {\"Network\": \"10.99.0.0/16\"}\n",
    );
    let record = ImageKubernetes {
        present: true,
        reason: None,
        version: Some("v1.31.4".into()),
        images_archive: None,
        cni_manifest: Some(CNI.into()),
        cni_pod_cidr: Some("10.99.0.0/16".into()),
        components: vec![],
    };
    write(root, "usr/lib/kubeboot/kubernetes.toml", &record.to_toml());
    let again_runner = masters[w].runner.clone();
    let client = common::client(&etcd).await;
    let mut restarted = KubePhase::new(
        Paths::under(masters[w].root.path()),
        again_runner.clone(),
        probe(),
        Some(client),
    );
    let s = restarted.reconcile(&masters[w].ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    let calls = again_runner.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].program, Program::Kubectl);
    assert_eq!(
        args(&calls[0]),
        vec![
            "--kubeconfig",
            "/etc/kubernetes/admin.conf",
            "apply",
            "-f",
            "/var/lib/kubeboot/kubeadm/cni.yaml"
        ]
    );
    assert_ne!(pod_subnet, "10.99.0.0/16");
    assert_eq!(
        calls[0].files,
        vec![(
            root.join("var/lib/kubeboot/kubeadm/cni.yaml"),
            format!("net-conf.json: |\n  {{\"Network\": \"{pod_subnet}\"}}\n"),
            0o644
        )]
    );

    // The worker: no election, no PKI, `kubeadm join` with token and pin.
    let mut wk = worker(&c, "worker-1");
    let s = wk.phase.reconcile(&wk.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert_eq!(s.init_node, None);
    let calls = wk.runner.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        args(&calls[0]),
        vec!["join", "--config", "/var/lib/kubeboot/kubeadm/join.yaml"]
    );
    let mut want = wk.ctx.inputs.clone();
    want.kubernetes_version = Some("v1.31.4".into());
    assert_eq!(calls[0].files[0].1, want.render_join_worker().unwrap());
    assert!(!calls[0].files[0].1.contains("controlPlane"));
    assert!(!wk.root.path().join("etc/kubernetes/pki/ca.key").exists());
    let s = wk.phase.reconcile(&wk.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert_eq!(wk.runner.calls().len(), 1, "the worker joined twice");
}

#[tokio::test]
async fn a_failed_join_backs_off_then_retries() {
    let c = cluster();
    let mut wk = worker(&c, "worker-2");
    wk.phase = KubePhase::new(
        Paths::under(wk.root.path()),
        wk.runner.clone(),
        probe(),
        None,
    )
    .with_backoff(Backoff {
        base: Duration::from_secs(5),
        max: Duration::from_secs(60),
    });
    wk.runner.push_result(Err(RunError::Failed {
        command: "kubeadm join".into(),
        code: Some(1),
        stderr_tail: "couldn't validate the identity of the API Server".into(),
        output: RunOutput {
            stdout: String::new(),
            stderr: "couldn't validate the identity of the API Server\n".into(),
        },
    }));
    let t0 = SystemTime::now();
    let mut ctx = wk.ctx.clone();
    ctx.now = t0;
    let s = wk.phase.reconcile(&ctx).await.unwrap();
    match &s.phase {
        PhaseState::Retrying {
            failures,
            last_error,
            next_attempt_in_s,
        } => {
            assert_eq!(*failures, 1);
            assert!(
                last_error.contains("identity of the API Server"),
                "{last_error}"
            );
            assert_eq!(*next_attempt_in_s, 5);
        }
        other => panic!("{other:?}"),
    }
    assert!(!s.joined);
    // Inside the backoff: nothing runs.
    ctx.now = t0 + Duration::from_secs(4);
    let s = wk.phase.reconcile(&ctx).await.unwrap();
    assert!(matches!(s.phase, PhaseState::Retrying { .. }));
    assert_eq!(wk.runner.calls().len(), 1);
    // After it: the join runs again and succeeds.
    ctx.now = t0 + Duration::from_secs(5);
    let s = wk.phase.reconcile(&ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert_eq!(wk.runner.calls().len(), 2);
    assert_eq!(wk.phase.retry_state().failures, 0);
    // No archive in this image: nothing to report about an import.
    assert_eq!(s.images_imported, None);
}

#[tokio::test]
async fn the_images_archive_is_imported_before_the_join() {
    let c = cluster();
    let mut wk = worker(&c, "worker-5");
    let archive = "/usr/lib/kubeboot/images/control-plane.oci.tar";
    let m = ImageKubernetes {
        present: true,
        reason: None,
        version: Some("v1.31.4".into()),
        images_archive: Some(archive.into()),
        cni_manifest: None,
        cni_pod_cidr: None,
        components: vec![],
    };
    write(
        wk.root.path(),
        "usr/lib/kubeboot/kubernetes.toml",
        &m.to_toml(),
    );
    // The caller did not ask for Never; the archive implies it.
    wk.ctx.inputs.image_pull_policy = None;
    // The first import fails (containerd not up yet): nothing else runs.
    wk.runner.push_result(Err(RunError::Failed {
        command: "ctr images import".into(),
        code: Some(1),
        stderr_tail: "connection refused".into(),
        output: RunOutput {
            stdout: String::new(),
            stderr: "connection refused\n".into(),
        },
    }));
    let t0 = SystemTime::now();
    let mut ctx = wk.ctx.clone();
    ctx.now = t0;
    let s = wk.phase.reconcile(&ctx).await.unwrap();
    assert!(matches!(s.phase, PhaseState::Retrying { .. }), "{s:?}");
    assert_eq!(s.images_imported, Some(false));
    assert_eq!(wk.runner.calls().len(), 1);
    let marker = wk
        .root
        .path()
        .join("var/lib/kubeboot/kubeadm")
        .join(kubeadm::phase::IMAGES_IMPORTED_MARKER);
    assert!(!marker.exists());
    // Inside the backoff: still not imported.
    ctx.now = t0 + Duration::from_secs(1);
    let s = wk.phase.reconcile(&ctx).await.unwrap();
    assert_eq!(s.images_imported, Some(false));
    ctx.now = t0 + Duration::from_secs(5);
    let s = wk.phase.reconcile(&ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert_eq!(s.images_imported, Some(true));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("v1.31.4 {archive}\n")
    );
    let calls = wk.runner.calls();
    let got: Vec<Vec<&str>> = calls.iter().map(args).collect();
    let import = vec![
        "--address",
        "/run/containerd/containerd.sock",
        "--namespace",
        "k8s.io",
        "images",
        "import",
        archive,
    ];
    assert_eq!(calls[0].program, Program::Ctr);
    assert_eq!(calls[1].program, Program::Ctr);
    assert_eq!(got[0], import);
    assert_eq!(got[1], import);
    assert_eq!(
        got[2],
        vec!["join", "--config", "/var/lib/kubeboot/kubeadm/join.yaml"]
    );
    assert_eq!(calls.len(), 3);
    assert!(calls[2].files[0].1.contains("imagePullPolicy: Never"));
    // Another agent process (a reboot) on the set-up node: no import, and
    // the status still says the images were imported (the marker).
    let mut again = KubePhase::new(
        Paths::under(wk.root.path()),
        wk.runner.clone(),
        probe(),
        None,
    );
    let s = again.reconcile(&ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert_eq!(s.images_imported, Some(true));
    assert_eq!(wk.runner.calls().len(), 3);
    // An image of another Kubernetes version does not count as imported.
    let m = ImageKubernetes {
        version: Some("v1.32.0".into()),
        ..m
    };
    write(
        wk.root.path(),
        "usr/lib/kubeboot/kubernetes.toml",
        &m.to_toml(),
    );
    let mut other = KubePhase::new(
        Paths::under(wk.root.path()),
        wk.runner.clone(),
        probe(),
        None,
    );
    let s = other.reconcile(&ctx).await.unwrap();
    assert_eq!(s.images_imported, Some(false));
}

#[tokio::test]
async fn the_state_shows_joining_while_kubeadm_runs() {
    let c = cluster();
    let root = tempfile::tempdir().unwrap();
    image_manifest(root.path(), true);
    // The stand-in reads the phase's state while "kubeadm" runs.
    let seen: std::sync::Arc<std::sync::Mutex<Vec<PhaseState>>> = Default::default();
    let slot: std::sync::Arc<std::sync::Mutex<Option<tokio::sync::watch::Receiver<PhaseState>>>> =
        Default::default();
    let effect = kubeadm_effect(
        root.path().to_owned(),
        c.pki.kubernetes_ca.clone(),
        "worker-6".into(),
    );
    let (seen2, slot2) = (seen.clone(), slot.clone());
    let runner = RecordingRunner::with_effect(Box::new(move |inv: &Invocation| {
        if let Some(rx) = slot2.lock().unwrap().as_ref() {
            seen2.lock().unwrap().push(rx.borrow().clone());
        }
        effect(inv)
    }));
    let mut phase = KubePhase::new(Paths::under(root.path()), runner, probe(), None);
    let rx = phase.watch();
    assert_eq!(*rx.borrow(), PhaseState::Pending);
    *slot.lock().unwrap() = Some(phase.watch());
    let ctx = worker(&c, "worker-6").ctx;
    let s = phase.reconcile(&ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert_eq!(*seen.lock().unwrap(), vec![PhaseState::Joining]);
    assert_eq!(*rx.borrow(), PhaseState::Ready);
    assert_eq!(
        kubeadm::vip_health(&PhaseState::Joining, 6444),
        kubeadm::VipHealth::EtcdAndApiServer {
            api_port: 6444,
            standby: true
        }
    );
}

#[tokio::test]
async fn leftovers_of_a_crashed_join_are_reset_first() {
    let c = cluster();
    let mut wk = worker(&c, "worker-3");
    // kubeadm died after writing the kubelet config, before kubelet.conf.
    write(
        wk.root.path(),
        "var/lib/kubelet/config.yaml",
        "kind: KubeletConfiguration\n",
    );
    let s = wk.phase.reconcile(&wk.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    let calls = wk.runner.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        args(&calls[0]),
        vec![
            "reset",
            "--force",
            "--cri-socket",
            "unix:///run/containerd/containerd.sock"
        ]
    );
    assert_eq!(args(&calls[1])[0], "join");
}

#[tokio::test]
async fn an_image_without_kubernetes_is_skipped_with_its_reason() {
    let c = cluster();
    let mut wk = worker(&c, "worker-4");
    image_manifest(wk.root.path(), false);
    let s = wk.phase.reconcile(&wk.ctx).await.unwrap();
    assert_eq!(
        s.phase,
        PhaseState::Skipped {
            reason: "built with --kubernetes none".into()
        }
    );
    assert!(wk.runner.calls().is_empty());
    assert_eq!(
        kubeadm::vip_health(&s.phase, 6444),
        kubeadm::VipHealth::Etcd
    );
}

#[tokio::test]
async fn a_master_recreates_an_expired_token_for_a_late_joiner() {
    let etcd = common::start_etcd("token").await;
    let c = cluster();
    let mut m = master(&c, &etcd, 1).await;
    let s = m.phase.reconcile(&m.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    m.runner.clear();
    // The token expired an hour ago; a worker is waiting.
    let expired = format!(
        "{{\"kind\":\"BootstrapToken\",\"token\":\"{}\",\"expires\":\"2020-01-01T00:00:00Z\"}}",
        c.token.expose()
    );
    m.runner.push_result(Ok(RunOutput {
        stdout: expired,
        stderr: String::new(),
    }));
    let mut ctx = m.ctx.clone();
    ctx.joiners_waiting = true;
    let s = m.phase.reconcile(&ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    let calls = m.runner.calls();
    let got: Vec<Vec<&str>> = calls.iter().map(args).collect();
    let token = c.token.expose();
    assert_eq!(
        got,
        vec![
            vec![
                "token",
                "list",
                "-o",
                "json",
                "--kubeconfig",
                "/etc/kubernetes/admin.conf"
            ],
            vec![
                "token",
                "delete",
                c.token.id(),
                "--kubeconfig",
                "/etc/kubernetes/admin.conf"
            ],
            vec![
                "token",
                "create",
                token.as_str(),
                "--ttl",
                "24h0m0s",
                "--description",
                kubeadm::token::TOKEN_DESCRIPTION,
                "--kubeconfig",
                "/etc/kubernetes/admin.conf"
            ],
        ]
    );
    // Still waiting 10 s later: not looked at again before the interval.
    m.runner.clear();
    ctx.now += Duration::from_secs(10);
    m.phase.reconcile(&ctx).await.unwrap();
    assert!(m.runner.calls().is_empty(), "{:?}", m.runner.calls());
    // After it: listed again (now valid, so only the listing runs).
    ctx.now += kubeadm::phase::TOKEN_CHECK_INTERVAL;
    m.runner.push_result(Ok(RunOutput {
        stdout: format!(
            "{{\"token\":\"{}\",\"expires\":\"2099-01-01T00:00:00Z\"}}",
            c.token.expose()
        ),
        stderr: String::new(),
    }));
    m.phase.reconcile(&ctx).await.unwrap();
    let got: Vec<Vec<String>> = m.runner.calls().iter().map(|r| r.args.clone()).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0][1], "list");
    // Nobody waiting: the token is left alone.
    m.runner.clear();
    let mut ctx = m.ctx.clone();
    ctx.now += Duration::from_secs(3600);
    let s = m.phase.reconcile(&ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert!(m.runner.calls().is_empty());
    assert_eq!(
        config_path("join.yaml"),
        "/var/lib/kubeboot/kubeadm/join.yaml"
    );
}

#[tokio::test]
async fn control_plane_joins_run_one_at_a_time() {
    let etcd = common::start_etcd("joinlock").await;
    let c = cluster();
    let mut client = common::client(&etcd).await;
    kubeadm::election::elect_init_node(&mut client, "id-init")
        .await
        .unwrap();
    kubeadm::election::mark_init_done(&mut client, "id-init")
        .await
        .unwrap();
    // Another master is joining: it holds the lock.
    let kubeadm::election::JoinLock::Held(lease) =
        kubeadm::election::take_join_lock(&mut client, "id-other", 60)
            .await
            .unwrap()
    else {
        panic!("the lock is free at first");
    };
    assert_eq!(
        kubeadm::election::take_join_lock(&mut client, "id-third", 60)
            .await
            .unwrap(),
        kubeadm::election::JoinLock::Busy {
            holder: "id-other".into()
        }
    );
    let mut m = master(&c, &etcd, 2).await;
    for _ in 0..2 {
        let s = m.phase.reconcile(&m.ctx).await.unwrap();
        assert_eq!(s.phase, PhaseState::Joining);
        assert!(!s.joined);
        assert!(m.runner.calls().is_empty(), "{:?}", m.runner.calls());
    }
    // The other join ends: this master joins, and gives the lock back.
    kubeadm::election::release_join_lock(&mut client, lease).await;
    let s = m.phase.reconcile(&m.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    let calls = m.runner.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(args(&calls[0])[0], "join");
    let r = client
        .get(kubeadm::election::JOIN_LOCK_KEY, None)
        .await
        .unwrap();
    assert!(r.kvs().is_empty(), "the lock was not given back");
}

#[tokio::test]
async fn a_master_that_lost_the_election_waits_for_the_init_node() {
    let etcd = common::start_etcd("wait").await;
    let c = cluster();
    let mut client = common::client(&etcd).await;
    let other = kubeadm::election::elect_init_node(&mut client, "id-other")
        .await
        .unwrap();
    assert!(other.won);
    let mut m = master(&c, &etcd, 2).await;
    for _ in 0..2 {
        let s = m.phase.reconcile(&m.ctx).await.unwrap();
        assert_eq!(
            s.phase,
            PhaseState::WaitingForInit {
                init_node: "id-other".into()
            }
        );
        assert!(!s.is_init_node);
        assert!(m.runner.calls().is_empty());
        assert!(!m.root.path().join("etc/kubernetes/pki/ca.key").exists());
    }
    // The init node finishes: the next call joins as a control-plane node.
    kubeadm::election::mark_init_done(&mut client, "id-other")
        .await
        .unwrap();
    let s = m.phase.reconcile(&m.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    let calls = m.runner.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        args(&calls[0]),
        vec!["join", "--config", "/var/lib/kubeboot/kubeadm/join.yaml"]
    );
    assert!(calls[0].files[0].1.contains("controlPlane:"));
    assert_shared_pki(m.root.path(), &c);
}

#[tokio::test]
async fn an_unreachable_etcd_is_retried_on_the_backoff_schedule() {
    let etcd = common::start_etcd("gone").await;
    let c = cluster();
    let mut m = master(&c, &etcd, 3).await;
    drop(etcd);
    let t0 = SystemTime::now();
    let mut ctx = m.ctx.clone();
    ctx.now = t0;
    let s = tokio::time::timeout(Duration::from_secs(30), m.phase.reconcile(&ctx))
        .await
        .expect("the election against a dead etcd did not give up")
        .unwrap();
    match &s.phase {
        PhaseState::Retrying {
            failures,
            last_error,
            ..
        } => {
            assert_eq!(*failures, 1);
            assert!(last_error.starts_with("init election"), "{last_error}");
        }
        other => panic!("{other:?}"),
    }
    // Within the backoff: no new attempt, the failure count stays.
    ctx.now = t0 + Duration::from_secs(2);
    let s = m.phase.reconcile(&ctx).await.unwrap();
    assert!(
        matches!(s.phase, PhaseState::Retrying { failures: 1, .. }),
        "{s:?}"
    );
    assert!(m.runner.calls().is_empty());
    assert!(!m.root.path().join("etc/kubernetes/pki/ca.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_init_node_is_replaced_by_exactly_one_master_after_the_grace() {
    let etcd = common::start_etcd("takeover").await;
    let c = cluster();
    let mut client = common::client(&etcd).await;
    // "id-dead" won and never showed any liveness.
    assert!(
        kubeadm::election::elect_init_node(&mut client, "id-dead")
            .await
            .unwrap()
            .won
    );
    let grace = Duration::from_secs(60);
    let mut masters = vec![
        master(&c, &etcd, 1).await,
        master(&c, &etcd, 2).await,
        master(&c, &etcd, 3).await,
    ];
    let t0 = SystemTime::now();
    for m in masters.iter_mut() {
        m.phase = KubePhase::new(
            Paths::under(m.root.path()),
            m.runner.clone(),
            probe(),
            Some(common::client(&etcd).await),
        )
        .with_takeover_grace(grace);
        m.ctx.now = t0;
    }
    // Before the grace: everyone waits for the dead node.
    let st = reconcile_all(&mut masters).await;
    for s in &st {
        assert_eq!(
            s.phase,
            PhaseState::WaitingForInit {
                init_node: "id-dead".into()
            }
        );
    }
    for m in masters.iter_mut() {
        m.ctx.now = t0 + grace - Duration::from_secs(1);
    }
    let st = reconcile_all(&mut masters).await;
    assert!(st
        .iter()
        .all(|s| matches!(s.phase, PhaseState::WaitingForInit { .. })));
    assert!(masters.iter().all(|m| m.runner.calls().is_empty()));
    // After it: exactly one takes over and initialises.
    for m in masters.iter_mut() {
        m.ctx.now = t0 + grace;
    }
    let st = reconcile_all(&mut masters).await;
    let inits: Vec<usize> = (0..3)
        .filter(|i| {
            masters[*i]
                .runner
                .calls()
                .iter()
                .any(|r| r.args.first().map(String::as_str) == Some("init"))
        })
        .collect();
    assert_eq!(inits.len(), 1, "{st:?}");
    let w = inits[0];
    assert_eq!(st[w].phase, PhaseState::Ready);
    assert!(st[w].is_init_node);
    let rec = kubeadm::election::read_init(&mut client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.winner, masters[w].ctx.node_id);
    assert_eq!(
        kubeadm::election::init_done(&mut client).await.unwrap(),
        Some(masters[w].ctx.node_id.clone())
    );
    // The liveness lease was given back after the init.
    assert!(!kubeadm::election::init_alive(&mut client).await.unwrap());
    // Next rounds: the others join, one at a time (the join lock).
    let mut st = reconcile_all(&mut masters).await;
    if !st.iter().all(|s| s.phase == PhaseState::Ready) {
        st = reconcile_all(&mut masters).await;
    }
    for (i, s) in st.iter().enumerate() {
        assert_eq!(s.phase, PhaseState::Ready, "master {i}");
        if i != w {
            let calls = masters[i].runner.calls();
            assert_eq!(calls.len(), 1, "{calls:?}");
            assert_eq!(args(&calls[0])[0], "join");
        }
    }
}

#[tokio::test]
async fn a_live_init_node_is_not_replaced() {
    let etcd = common::start_etcd("alive").await;
    let c = cluster();
    let mut client = common::client(&etcd).await;
    assert!(
        kubeadm::election::elect_init_node(&mut client, "id-live")
            .await
            .unwrap()
            .won
    );
    // The live node holds its liveness key (30 s lease: enough for the test).
    let lease = kubeadm::election::announce_alive(&mut client, "id-live", 30)
        .await
        .unwrap();
    assert!(lease.is_some());
    // Someone else cannot announce for the winner's role.
    assert_eq!(
        kubeadm::election::announce_alive(&mut client, "id-other", 30)
            .await
            .unwrap(),
        None
    );
    let mut m = master(&c, &etcd, 1).await;
    m.phase = KubePhase::new(
        Paths::under(m.root.path()),
        m.runner.clone(),
        probe(),
        Some(common::client(&etcd).await),
    )
    .with_takeover_grace(Duration::from_secs(60));
    let t0 = SystemTime::now();
    for dt in [0, 61, 200] {
        let mut ctx = m.ctx.clone();
        ctx.now = t0 + Duration::from_secs(dt);
        let s = m.phase.reconcile(&ctx).await.unwrap();
        assert_eq!(
            s.phase,
            PhaseState::WaitingForInit {
                init_node: "id-live".into()
            }
        );
    }
    assert!(m.runner.calls().is_empty());
    // A stale takeover (an old revision) fails even without liveness.
    kubeadm::election::release_alive(&mut client, lease.unwrap()).await;
    let seen = kubeadm::election::read_init(&mut client)
        .await
        .unwrap()
        .unwrap();
    let stale = kubeadm::election::InitRecord {
        mod_revision: seen.mod_revision - 1,
        ..seen.clone()
    };
    assert!(!kubeadm::election::take_over(&mut client, "id-x", &stale)
        .await
        .unwrap());
    assert!(kubeadm::election::take_over(&mut client, "id-x", &seen)
        .await
        .unwrap());
    assert!(!kubeadm::election::take_over(&mut client, "id-y", &seen)
        .await
        .unwrap());
}

/// The init node whose `kubeadm init` keeps failing holds the init through
/// every backoff (a real init under emulation takes many minutes, and a
/// waiting master must never start a second one next to a live agent);
/// its status keeps naming it the init node while it waits. Only once its
/// agent is gone (the reconciler dropped: the lease expires) does a
/// waiting master take over. Real time: a 2 s lease, a 2 s grace, backoffs
/// of 0.5–1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_init_node_keeps_the_init_through_its_backoffs_until_it_dies() {
    let etcd = common::start_etcd("persist").await;
    let c = cluster();
    let mut client = common::client(&etcd).await;
    let mut m1 = master(&c, &etcd, 1).await;
    let mut m2 = master(&c, &etcd, 2).await;
    let failing = RecordingRunner::with_effect(Box::new(|inv: &Invocation| {
        if inv.args.first().map(String::as_str) == Some("init") {
            Err(RunError::Failed {
                command: "kubeadm init".into(),
                code: Some(1),
                stderr_tail:
                    "[ERROR NumCPU]: the number of available CPUs 1 is less than the required 2"
                        .into(),
                output: RunOutput {
                    stdout: String::new(),
                    stderr: "error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR NumCPU]: the number of available CPUs 1 is less than the required 2\n".into(),
                },
            })
        } else {
            Ok(RunOutput::default())
        }
    }));
    m1.runner = failing.clone();
    m1.phase = KubePhase::new(
        Paths::under(m1.root.path()),
        failing,
        probe(),
        Some(common::client(&etcd).await),
    )
    .with_alive_ttl(2)
    .with_backoff(Backoff {
        base: Duration::from_millis(500),
        max: Duration::from_secs(1),
    });
    m2.phase = KubePhase::new(
        Paths::under(m2.root.path()),
        m2.runner.clone(),
        probe(),
        Some(common::client(&etcd).await),
    )
    .with_alive_ttl(2)
    .with_takeover_grace(Duration::from_secs(2));
    // m1 wins the election and fails its first init.
    m1.ctx.now = SystemTime::now();
    let s = m1.phase.reconcile(&m1.ctx).await.unwrap();
    assert!(matches!(s.phase, PhaseState::Retrying { .. }), "{s:?}");
    assert!(m1.phase.holds_init_alive());
    // 7 s of failing attempts and backoffs (several grace periods).
    let start = std::time::Instant::now();
    let mut retrying_seen = 0;
    while start.elapsed() < Duration::from_secs(7) {
        m1.ctx.now = SystemTime::now();
        m2.ctx.now = SystemTime::now();
        let s1 = m1.phase.reconcile(&m1.ctx).await.unwrap();
        let s2 = m2.phase.reconcile(&m2.ctx).await.unwrap();
        // The status keeps the election's outcome, backoff or not.
        assert!(matches!(s1.phase, PhaseState::Retrying { .. }), "{s1:?}");
        assert_eq!(s1.init_node.as_deref(), Some("id-1"), "{s1:?}");
        assert!(s1.is_init_node, "{s1:?}");
        retrying_seen += 1;
        assert_eq!(
            s2.phase,
            PhaseState::WaitingForInit {
                init_node: "id-1".into()
            },
            "a live init node was replaced"
        );
        assert!(!s2.is_init_node);
        assert!(kubeadm::election::init_alive(&mut client).await.unwrap());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(retrying_seen > 10);
    let inits = m1
        .runner
        .calls()
        .iter()
        .filter(|r| r.args.first().map(String::as_str) == Some("init"))
        .count();
    assert!(inits >= 4, "only {inits} init attempts");
    assert!(m2.runner.calls().is_empty());
    assert_eq!(
        kubeadm::election::read_init(&mut client)
            .await
            .unwrap()
            .unwrap()
            .winner,
        "id-1"
    );
    // m1's agent stops: its lease expires and m2 takes over.
    drop(m1);
    let taken = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            m2.ctx.now = SystemTime::now();
            let s = m2.phase.reconcile(&m2.ctx).await.unwrap();
            if s.phase == PhaseState::Ready {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("no takeover after the init node died");
    assert!(taken.is_init_node);
    assert_eq!(taken.init_node.as_deref(), Some("id-2"));
    let calls = m2.runner.calls();
    assert_eq!(args(&calls[0])[0], "init", "{calls:?}");
    assert_eq!(
        kubeadm::election::init_done(&mut client).await.unwrap(),
        Some("id-2".into())
    );
    // Init done: the liveness key is given back.
    assert!(!m2.phase.holds_init_alive());
    assert!(!kubeadm::election::init_alive(&mut client).await.unwrap());
}

/// What a real 1.24 `kubeadm init` printed when the control plane did not
/// come up: it had written every file first (kubeconfigs, manifests, the
/// kubelet configuration), then waited and gave up.
fn wait_control_plane_failure() -> RunError {
    RunError::Failed {
        command: "kubeadm init --config /var/lib/kubeboot/kubeadm/init.yaml".into(),
        code: Some(1),
        stderr_tail: "error execution phase wait-control-plane: couldn't initialize a Kubernetes cluster".into(),
        output: RunOutput {
            stdout: "[wait-control-plane] Waiting for the kubelet to boot up the control plane\n\
                     [kubelet-check] Initial timeout of 40s passed.\n\
                     Unfortunately, an error has occurred:\n\ttimed out waiting for the condition\n"
                .into(),
            stderr: "W1223 10:00:00.000000    1234 strict.go:55] error unmarshaling JSON: \
                     json: unknown field \"containerRuntimeEndpoint\"\n\
                     \t[WARNING Hostname]: hostname \"master-1\" could not be reached\n\
                     error execution phase wait-control-plane: couldn't initialize a Kubernetes cluster\n\
                     To see the stack trace of this error execute with --v=5 or higher\n"
                .into(),
        },
    }
}

fn count(r: &RecordingRunner, sub: &str) -> usize {
    r.calls()
        .iter()
        .filter(|c| {
            c.program == Program::Kubeadm && c.args.first().map(String::as_str) == Some(sub)
        })
        .count()
}

/// Ready means proven: an init that wrote every file and then failed at
/// wait-control-plane is not ready, records no init-done (so no master
/// joins meanwhile), shows kubeadm's failed phase, error and warnings, and
/// is reset before it is tried again after the backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_init_is_never_ready_is_reset_and_retried_while_nobody_joins() {
    let etcd = common::start_etcd("failinit").await;
    let c = cluster();
    let mut client = common::client(&etcd).await;
    let mut m1 = master(&c, &etcd, 1).await;
    let mut m2 = master(&c, &etcd, 2).await;
    // The first init leaves all of kubeadm's files, then fails.
    let effect = kubeadm_effect(
        m1.root.path().to_owned(),
        c.pki.kubernetes_ca.clone(),
        "master-1".into(),
    );
    let inits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = inits.clone();
    let runner = RecordingRunner::with_effect(Box::new(move |inv: &Invocation| {
        let out = effect(inv)?;
        if inv.args.first().map(String::as_str) == Some("init")
            && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0
        {
            return Err(wait_control_plane_failure());
        }
        Ok(out)
    }));
    m1.runner = runner.clone();
    m1.phase = KubePhase::new(
        Paths::under(m1.root.path()),
        runner,
        probe(),
        Some(common::client(&etcd).await),
    );
    let t0 = SystemTime::now();
    m1.ctx.now = t0;
    m2.ctx.now = t0;
    let s = m1.phase.reconcile(&m1.ctx).await.unwrap();
    match &s.phase {
        PhaseState::Retrying {
            failures,
            last_error,
            ..
        } => {
            assert_eq!(*failures, 1);
            assert_eq!(
                last_error,
                "kubeadm init failed in phase wait-control-plane: couldn't initialize a Kubernetes cluster"
            );
        }
        other => panic!("a failed init reported {other:?}"),
    }
    assert!(!s.joined);
    assert!(s.is_init_node);
    let run = s.kubeadm.clone().expect("the failed run in the status");
    assert!(!run.succeeded);
    assert_eq!(run.failed_phase.as_deref(), Some("wait-control-plane"));
    assert!(
        run.warnings
            .iter()
            .any(|w| w.contains("unknown field \"containerRuntimeEndpoint\"")),
        "{:?}",
        run.warnings
    );
    assert!(run
        .warnings
        .iter()
        .any(|w| w.starts_with("[WARNING Hostname]")));
    assert!(run
        .output_tail
        .iter()
        .any(|l| l.contains("timed out waiting for the condition")));
    // Every file kubeadm writes is there, and still: no proof, no
    // init-done, no CNI.
    let root = m1.root.path();
    for f in [
        "etc/kubernetes/admin.conf",
        "etc/kubernetes/kubelet.conf",
        "etc/kubernetes/manifests/kube-apiserver.yaml",
        "var/lib/kubelet/config.yaml",
    ] {
        assert!(root.join(f).exists(), "{f}");
    }
    assert!(!root.join("var/lib/kubeboot/kubeadm/proven.json").exists());
    assert_eq!(
        kubeadm::election::init_done(&mut client).await.unwrap(),
        None
    );
    // The other master waits; it never joins a cluster that is not there.
    for dt in [0, 1, 3] {
        m2.ctx.now = t0 + Duration::from_secs(dt);
        let s2 = m2.phase.reconcile(&m2.ctx).await.unwrap();
        assert_eq!(
            s2.phase,
            PhaseState::WaitingForInit {
                init_node: "id-1".into()
            }
        );
        assert!(m2.runner.calls().is_empty(), "{:?}", m2.runner.calls());
    }
    // A reconcile inside the backoff (a restart of the loop, not of the
    // agent) runs nothing and still is not ready.
    m1.ctx.now = t0 + Duration::from_secs(4);
    let s = m1.phase.reconcile(&m1.ctx).await.unwrap();
    assert!(matches!(s.phase, PhaseState::Retrying { .. }), "{s:?}");
    assert_eq!(count(&m1.runner, "init"), 1);
    // After the backoff: reset first (the leftovers), then init again.
    m1.ctx.now = t0 + Duration::from_secs(5);
    let s = m1.phase.reconcile(&m1.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready, "{s:?}");
    assert_eq!(s.proven.as_deref(), Some("scripted proof"));
    let calls = m1.runner.calls();
    let got: Vec<Vec<&str>> = calls.iter().map(args).collect();
    let subs: Vec<&str> = got.iter().map(|a| a[0]).collect();
    assert_eq!(
        subs,
        vec!["init", "reset", "init", "--kubeconfig"],
        "{got:?}"
    );
    assert_eq!(
        got[1],
        vec![
            "reset",
            "--force",
            "--cri-socket",
            "unix:///run/containerd/containerd.sock"
        ]
    );
    assert_shared_pki(root, &c);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("var/lib/kubeboot/kubeadm/proven.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["step"], "init");
    assert_eq!(record["node_name"], "master-1");
    assert_eq!(record["ca_pin"], c.pin.as_str());
    assert_eq!(
        kubeadm::election::init_done(&mut client)
            .await
            .unwrap()
            .as_deref(),
        Some("id-1")
    );
    // Now the other master joins.
    m2.ctx.now = t0 + Duration::from_secs(6);
    let s2 = m2.phase.reconcile(&m2.ctx).await.unwrap();
    assert_eq!(s2.phase, PhaseState::Ready);
    assert_eq!(count(&m2.runner, "join"), 1);
}

/// kubeadm exiting 0 is not enough either: when the node's API server
/// never answers, the init is not ready, nothing is recorded, and the next
/// attempt resets and initialises again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_that_exits_0_but_never_answers_is_not_ready() {
    let etcd = common::start_etcd("noanswer").await;
    let c = cluster();
    let mut client = common::client(&etcd).await;
    let mut m1 = master(&c, &etcd, 1).await;
    let probe = ScriptedProbe::proving();
    probe.fail_proofs(Some(
        "GET https://127.0.0.1:6443/readyz: error sending request: connection refused",
    ));
    m1.phase = KubePhase::new(
        Paths::under(m1.root.path()),
        m1.runner.clone(),
        probe.clone(),
        Some(common::client(&etcd).await),
    )
    .with_proof_timeout(Duration::from_millis(400), Duration::from_millis(100));
    let t0 = SystemTime::now();
    m1.ctx.now = t0;
    let s = m1.phase.reconcile(&m1.ctx).await.unwrap();
    match &s.phase {
        PhaseState::Retrying { last_error, .. } => {
            assert!(
                last_error.starts_with("kubeadm init exited 0 but its result was not proven"),
                "{last_error}"
            );
            assert!(last_error.contains("connection refused"), "{last_error}");
        }
        other => panic!("an unproven init reported {other:?}"),
    }
    assert!(probe.proofs_asked() >= 2, "asked {}", probe.proofs_asked());
    assert!(s.kubeadm.as_ref().is_some_and(|r| r.succeeded));
    assert!(!s.joined);
    assert!(!m1
        .root
        .path()
        .join("var/lib/kubeboot/kubeadm/proven.json")
        .exists());
    assert_eq!(
        kubeadm::election::init_done(&mut client).await.unwrap(),
        None
    );
    assert!(m1.phase.holds_init_alive());
    // No CNI manifest applied to a cluster that did not answer.
    assert!(m1
        .runner
        .calls()
        .iter()
        .all(|c| c.program == Program::Kubeadm));
    // The API answers now: reset, init, proven.
    probe.fail_proofs(None);
    m1.ctx.now = t0 + Duration::from_secs(5);
    let s = m1.phase.reconcile(&m1.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert_eq!(count(&m1.runner, "reset"), 1);
    assert_eq!(count(&m1.runner, "init"), 2);
    assert!(m1
        .root
        .path()
        .join("var/lib/kubeboot/kubeadm/proven.json")
        .exists());
    assert!(!m1.phase.holds_init_alive());
}

/// A node whose agent died after kubeadm wrote its files (or before the
/// proof was recorded) has every file and no proof: it is reset and set
/// up again, not trusted. Once proven, a restarted agent trusts the
/// record and shows the run's warnings.
#[tokio::test]
async fn complete_files_without_a_proof_are_reset_not_trusted() {
    let c = cluster();
    let mut wk = worker(&c, "worker-7");
    let effect = kubeadm_effect(
        wk.root.path().to_owned(),
        c.pki.kubernetes_ca.clone(),
        "worker-7".into(),
    );
    // Leave exactly what a join leaves, without running the phase.
    let join = Invocation::kubeadm(vec!["join".into()]);
    effect(&join).unwrap();
    let runner = RecordingRunner::with_effect(Box::new(move |inv: &Invocation| {
        let mut out = effect(inv)?;
        if inv.args.first().map(String::as_str) == Some("join") {
            out.stderr =
                "\t[WARNING SystemVerification]: missing optional cgroups: hugetlb\n".into();
        }
        Ok(out)
    }));
    wk.runner = runner.clone();
    wk.phase = KubePhase::new(Paths::under(wk.root.path()), runner.clone(), probe(), None);
    let s = wk.phase.reconcile(&wk.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    let calls = runner.calls();
    let got: Vec<Vec<&str>> = calls.iter().map(args).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0][0], "reset");
    assert_eq!(got[1][0], "join");
    // A new agent process: the record is trusted, nothing runs, and the
    // status keeps the proven run's warnings.
    let mut again = KubePhase::new(Paths::under(wk.root.path()), runner.clone(), probe(), None);
    let s = again.reconcile(&wk.ctx).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    assert_eq!(runner.calls().len(), 2);
    assert_eq!(s.proven.as_deref(), Some("scripted proof"));
    let run = s.kubeadm.expect("the proven run");
    assert!(run.succeeded);
    assert_eq!(
        run.command,
        "kubeadm join --config /var/lib/kubeboot/kubeadm/join.yaml"
    );
    assert_eq!(
        run.warnings,
        vec!["[WARNING SystemVerification]: missing optional cgroups: hugetlb"]
    );
    // The record of another cluster (another CA pin) is a leftover.
    let mut other = wk.ctx.clone();
    other.inputs.ca_pin = CaPin::parse(&format!("sha256:{}", "ab".repeat(32)), "test").unwrap();
    let s = again.reconcile(&other).await.unwrap();
    assert_eq!(s.phase, PhaseState::Ready);
    let calls = runner.calls();
    let got: Vec<Vec<&str>> = calls.iter().map(args).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((got[2][0], got[3][0]), ("reset", "join"));
}

/// What a real 1.24 `kubeadm join` printed when the API, slow under load,
/// did not answer one of its 10 s requests after the kubelet's TLS
/// bootstrap (run 11 in the qemu-tests README).
fn kubelet_start_failure() -> RunError {
    RunError::Failed {
        command: "kubeadm join --config /var/lib/kubeboot/kubeadm/join.yaml".into(),
        code: Some(1),
        stderr_tail: "error execution phase kubelet-start: error uploading crisocket".into(),
        output: RunOutput {
            stdout: "[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap...\n"
                .into(),
            stderr: "error execution phase kubelet-start: error uploading crisocket: error \
                     patching node \"worker-3\" through apiserver: Patch \
                     \"https://10.77.0.10:6443/api/v1/nodes/worker-3?timeout=10s\": net/http: \
                     request canceled (Client.Timeout exceeded while awaiting headers)\n\
                     To see the stack trace of this error execute with --v=5 or higher\n"
                .into(),
        },
    }
}

/// A join that failed late (in kubelet-start, after the files were
/// written) goes on from the failed phase, without a reset, at most
/// `MAX_RESUMES` times in a row; then the next attempt resets and starts
/// over. Every attempt is still proven before the node is ready.
#[tokio::test]
async fn a_join_that_failed_late_goes_on_from_the_failed_phase_then_resets() {
    let c = cluster();
    let mut wk = worker(&c, "worker-3");
    let effect = kubeadm_effect(
        wk.root.path().to_owned(),
        c.pki.kubernetes_ca.clone(),
        "worker-3".into(),
    );
    let joins = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = joins.clone();
    // The first three joins leave the kubelet's files and fail.
    let runner = RecordingRunner::with_effect(Box::new(move |inv: &Invocation| {
        let out = effect(inv)?;
        if inv.args.first().map(String::as_str) == Some("join")
            && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3
        {
            return Err(kubelet_start_failure());
        }
        Ok(out)
    }));
    wk.runner = runner.clone();
    wk.phase =
        KubePhase::new(Paths::under(wk.root.path()), runner, probe(), None).with_backoff(Backoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(5),
        });
    let t0 = SystemTime::now();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let mut ctx = wk.ctx.clone();
        ctx.now = t0 + Duration::from_secs(10 * i);
        statuses.push(wk.phase.reconcile(&ctx).await.unwrap());
    }
    let calls: Vec<Vec<String>> = wk
        .runner
        .calls()
        .iter()
        .filter(|r| r.program == Program::Kubeadm)
        .map(|r| r.args.clone())
        .collect();
    let skip = "--skip-phases=preflight,control-plane-prepare".to_owned();
    let resumed: Vec<bool> = calls
        .iter()
        .filter(|a| a[0] == "join")
        .map(|a| a.contains(&skip))
        .collect();
    // join, join from kubelet-start, join from kubelet-start, then reset
    // and a whole join.
    assert_eq!(resumed, vec![false, true, true, false], "{calls:?}");
    let subs: Vec<&str> = calls.iter().map(|a| a[0].as_str()).collect();
    assert_eq!(subs, vec!["join", "join", "join", "reset", "join"]);
    for s in &statuses[..3] {
        assert!(!s.joined, "{s:?}");
        match &s.phase {
            PhaseState::Retrying { last_error, .. } => {
                assert!(last_error.contains("kubelet-start"), "{last_error}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(statuses[3].phase, PhaseState::Ready);
    assert!(statuses[3].joined);
    assert!(statuses[3].proven.is_some());
}
