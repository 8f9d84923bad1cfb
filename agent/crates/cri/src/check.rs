//! The node check: two pods on the node's CNI network, started through the
//! CRI exactly as kubelet starts pods.
//!
//! 1. The runtime must report `RuntimeReady` and `NetworkReady` (a CNI
//!    configuration is loaded) and have the test image.
//! 2. Pod `server`: a sandbox (the configured pause image, its own network
//!    namespace set up by CNI) and a container running busybox `httpd` as
//!    a non-root user, serving a token from a read-only host directory.
//! 3. Pod `client`: a sandbox and a container, as the same non-root user,
//!    that records its uid, its `/etc/resolv.conf` and `/etc/hosts`,
//!    writes into its own root filesystem, fetches the token from the
//!    server pod's address over the CNI network, and writes all of it into
//!    a host directory mounted read-write.
//! 4. Both pods are stopped and removed.
//!
//! Every fact is handed to `emit` as `(key, value)` as soon as it is known,
//! so a failure still shows how far the check got; the caller prints them
//! (`agent cri-check`: `key=value` lines).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as api;

use crate::{image_spec, Client, CriError};

/// What the check runs and where.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// The CRI socket.
    pub socket: PathBuf,
    /// An image holding a static busybox at `/bin/busybox` and `/bin/sh`
    /// (the QEMU tests build one from Debian's busybox-static).
    pub image: String,
    /// A host directory for the pods' mounts and logs (emptied first).
    pub work_dir: PathBuf,
    /// The text the server pod serves and the client must fetch
    /// (letters, digits, '-').
    pub token: String,
    /// The non-root uid (and gid) the containers run as.
    pub uid: u32,
    /// Budget of each wait (runtime ready, container exit).
    pub timeout: Duration,
}

/// The port the server pod listens on (unprivileged: the server is not root).
pub const SERVER_PORT: u16 = 8080;

/// The client container's script (busybox `sh`).
const CLIENT_SCRIPT: &str = r#"set -u
busybox id -u > /out/uid
busybox cat /etc/resolv.conf > /out/resolv.conf
busybox cat /etc/hosts > /out/hosts
if echo own-root > /tmp/own-root; then busybox cat /tmp/own-root > /out/rootfs-write; fi
i=0
while [ "$i" -lt 30 ]; do
    # (busybox's own -T segfaults in Debian 12's busybox-static: timeout.)
    if busybox timeout 5 busybox wget -q -O /out/peer.tmp "http://$PEER/index.html"; then
        busybox mv /out/peer.tmp /out/peer
        break
    fi
    i=$((i + 1))
    busybox sleep 1
done
echo written > /out/written
[ -f /out/peer ]
"#;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CriError {
    let path = path.to_owned();
    move |source| CriError::Io { what, path, source }
}

/// One line: newlines and carriage returns become `\n` literally.
fn one_line(s: &str) -> String {
    s.trim_end().replace('\r', "").replace('\n', "\\n")
}

/// The systemd slice the check's pods run in. containerd runs runc with the
/// systemd cgroup driver (`SystemdCgroup = true`, like kubelet's
/// `cgroupDriver: systemd`), which wants a slice as the pod's cgroup parent
/// (kubelet's are `kubepods-...-pod<uid>.slice`); systemd creates it on use.
pub const CGROUP_PARENT: &str = "kubeboot-check.slice";

/// The pod sandbox configuration of pod `name` (pure).
pub fn pod_config(name: &str, token: &str, log_dir: &Path) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: format!("kubeboot-check-{name}"),
            uid: format!("kubeboot-check-{name}-{token}"),
            namespace: "kubeboot-check".into(),
            attempt: 0,
        }),
        hostname: format!("kubeboot-check-{name}"),
        log_directory: log_dir.join(name).display().to_string(),
        labels: HashMap::from([("app".to_owned(), "kubeboot-check".to_owned())]),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: CGROUP_PARENT.into(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                // Network, PID and IPC namespaces of the pod (mode POD).
                namespace_options: Some(api::NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container of `image` running `command` as `uid` with `mounts`
/// (container path, host path, read-only) and `envs` (pure).
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    uid: u32,
    mounts: &[(&str, &Path, bool)],
    envs: &[(&str, &str)],
) -> api::ContainerConfig {
    let id = Some(api::Int64Value {
        value: i64::from(uid),
    });
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: command.iter().map(|s| s.to_string()).collect(),
        envs: envs
            .iter()
            .map(|(k, v)| api::KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        mounts: mounts
            .iter()
            .map(|(container, host, readonly)| api::Mount {
                container_path: container.to_string(),
                host_path: host.display().to_string(),
                readonly: *readonly,
                ..Default::default()
            })
            .collect(),
        log_path: format!("{name}.log"),
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                run_as_user: id,
                run_as_group: id,
                no_new_privs: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The first `nameserver` of a resolv.conf text, if any (pure).
pub fn first_nameserver(text: &str) -> Option<&str> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
    })
}

/// Whether a hosts text maps `localhost` to 127.0.0.1 (pure).
pub fn maps_localhost(text: &str) -> bool {
    text.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some("127.0.0.1") && words.any(|w| w == "localhost")
    })
}

fn prepare(cfg: &CheckConfig) -> Result<(PathBuf, PathBuf, PathBuf), CriError> {
    let work = &cfg.work_dir;
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(io("emptying", work))?;
    }
    let (www, out, logs) = (work.join("www"), work.join("out"), work.join("logs"));
    for d in [&www, &out, &logs] {
        std::fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    let index = www.join("index.html");
    std::fs::write(&index, format!("{}\n", cfg.token)).map_err(io("writing", &index))?;
    for p in [&www, &index] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .map_err(io("chmod", p))?;
    }
    // Only the containers' user may write the output directory.
    std::os::unix::fs::chown(&out, Some(cfg.uid), Some(cfg.uid)).map_err(io("chown", &out))?;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700))
        .map_err(io("chmod", &out))?;
    Ok((www, out, logs))
}

/// Runs the check; `emit` gets every fact as it is learnt. The pods are
/// removed before it returns, also after a failure.
pub async fn run(cfg: &CheckConfig, emit: &mut dyn FnMut(&str, &str)) -> Result<(), CriError> {
    let mut client = Client::connect(&cfg.socket).await?;
    let v = client.version().await?;
    emit(
        "cri-runtime",
        &format!(
            "{} {} (CRI {})",
            v.runtime_name, v.runtime_version, v.runtime_api_version
        ),
    );
    client.wait_ready(cfg.timeout).await?;
    emit("cri-ready", "RuntimeReady NetworkReady");
    if !client.has_image(&cfg.image).await? {
        emit("cri-image", "absent");
        return Err(CriError::Failed(format!(
            "the runtime has no image {} (import it first)",
            cfg.image
        )));
    }
    emit("cri-image", &cfg.image);
    let (www, out, logs) = prepare(cfg)?;
    let mut pods = Vec::new();
    let result = pods_and_containers(cfg, &mut client, &mut pods, &www, &out, &logs, emit).await;
    let mut cleanup = Ok(());
    for pod in pods {
        if let Err(e) = client.remove_pod(&pod).await {
            tracing::warn!(pod, error = %e, "removing a check pod");
            cleanup = Err(e);
        }
    }
    if let Err(e) = &result {
        for name in ["server", "client"] {
            let log = logs.join(name).join(format!("{name}.log"));
            if let Ok(text) = std::fs::read_to_string(&log) {
                emit(&format!("cri-{name}-log"), &one_line(&text));
            }
        }
        emit("cri-error", &one_line(&e.to_string()));
    }
    result?;
    cleanup?;
    emit("cri-cleanup", "removed");
    Ok(())
}

async fn pods_and_containers(
    cfg: &CheckConfig,
    client: &mut Client,
    pods: &mut Vec<String>,
    www: &Path,
    out: &Path,
    logs: &Path,
    emit: &mut dyn FnMut(&str, &str),
) -> Result<(), CriError> {
    let server_pod = pod_config("server", &cfg.token, logs);
    let server = client.run_pod(&server_pod).await?;
    pods.push(server.clone());
    let server_ip = client.pod_ip(&server).await?;
    emit("cri-server-ip", &server_ip);
    let port = SERVER_PORT.to_string();
    let httpd = container_config(
        "server",
        &cfg.image,
        &["/bin/busybox", "httpd", "-f", "-p", &port, "-h", "/www"],
        cfg.uid,
        &[("/www", www, true)],
        &[],
    );
    client.start_container(&server, &server_pod, &httpd).await?;

    let client_pod = pod_config("client", &cfg.token, logs);
    let pod = client.run_pod(&client_pod).await?;
    pods.push(pod.clone());
    emit("cri-client-ip", &client.pod_ip(&pod).await?);
    let peer = if server_ip.contains(':') {
        format!("[{server_ip}]:{port}")
    } else {
        format!("{server_ip}:{port}")
    };
    let script = container_config(
        "client",
        &cfg.image,
        &["/bin/sh", "-c", CLIENT_SCRIPT],
        cfg.uid,
        &[("/out", out, false)],
        &[("PEER", &peer)],
    );
    let id = client.start_container(&pod, &client_pod, &script).await?;
    let status = client.wait_exited(&id, cfg.timeout).await?;
    emit("cri-client-exit", &status.exit_code.to_string());

    let read = |name: &str| std::fs::read_to_string(out.join(name)).ok();
    emit(
        "cri-client-uid",
        read("uid").as_deref().map(str::trim).unwrap_or("none"),
    );
    let written = out.join("written");
    match std::fs::metadata(&written) {
        Ok(m) => emit("cri-file-owner", &m.uid().to_string()),
        Err(_) => emit("cri-file-owner", "none"),
    }
    emit(
        "cri-rootfs-write",
        read("rootfs-write")
            .as_deref()
            .map(str::trim)
            .unwrap_or("none"),
    );
    emit(
        "cri-peer",
        read("peer").as_deref().map(str::trim).unwrap_or("none"),
    );
    let resolv = read("resolv.conf").unwrap_or_default();
    emit(
        "cri-resolv-nameserver",
        first_nameserver(&resolv).unwrap_or("none"),
    );
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    emit(
        "cri-resolv-matches-host",
        if !resolv.is_empty() && resolv == host_resolv {
            "yes"
        } else {
            "no"
        },
    );
    let hosts = read("hosts").unwrap_or_default();
    emit(
        "cri-hosts-localhost",
        if maps_localhost(&hosts) { "yes" } else { "no" },
    );
    if status.exit_code != 0 {
        return Err(CriError::Failed(format!(
            "the client container exited {} (reason {:?})",
            status.exit_code, status.reason
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_and_localhost_are_parsed() {
        let text = "# stub\nsearch example\nnameserver 127.0.0.53\nnameserver 10.0.0.1\n";
        assert_eq!(first_nameserver(text), Some("127.0.0.53"));
        assert_eq!(first_nameserver("search x\n"), None);
        assert!(maps_localhost("127.0.0.1\tlocalhost\n::1 localhost\n"));
        assert!(maps_localhost(
            "127.0.0.1 node localhost.localdomain localhost\n"
        ));
        assert!(!maps_localhost("127.0.1.1 localhost-not\n::1 localhost\n"));
    }

    #[test]
    fn containers_run_as_the_given_user_with_their_mounts() {
        let c = container_config(
            "client",
            "kubeboot.test/busybox:1",
            &["/bin/sh", "-c", "true"],
            1000,
            &[("/out", Path::new("/w/out"), false)],
            &[("PEER", "10.1.0.2:8080")],
        );
        let sc = c
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .expect("security context");
        assert_eq!(sc.run_as_user.as_ref().map(|v| v.value), Some(1000));
        assert_eq!(sc.run_as_group.as_ref().map(|v| v.value), Some(1000));
        assert!(!sc.privileged);
        assert_eq!(c.mounts[0].host_path, "/w/out");
        assert!(!c.mounts[0].readonly);
        assert_eq!(c.envs[0].value, "10.1.0.2:8080");
        assert_eq!(
            c.image.as_ref().map(|i| i.image.as_str()),
            Some("kubeboot.test/busybox:1")
        );
    }

    #[test]
    fn pods_get_their_own_network_namespace_and_log_directory() {
        let p = pod_config("server", "t-1", Path::new("/w/logs"));
        let ns = p
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .expect("namespace options");
        assert_eq!(ns.network, api::NamespaceMode::Pod as i32);
        assert_eq!(p.log_directory, "/w/logs/server");
        assert_eq!(
            p.linux.as_ref().map(|l| l.cgroup_parent.as_str()),
            Some("kubeboot-check.slice")
        );
        assert_eq!(
            p.metadata.as_ref().map(|m| m.uid.as_str()),
            Some("kubeboot-check-server-t-1")
        );
    }

    #[tokio::test]
    async fn an_absent_socket_is_a_connect_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("none.sock");
        match Client::connect(&socket).await {
            Err(CriError::Connect { socket: s, .. }) => assert_eq!(s, socket),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
    }

    #[test]
    fn one_line_keeps_newlines_visible() {
        assert_eq!(one_line("a\r\nb\n"), "a\\nb");
    }
}
