//! `notify_status` / `notify_ready` send sd_notify datagrams to
//! `$NOTIFY_SOCKET`, and do nothing without it.
//!
//! One test in its own binary: it sets process environment variables.

use std::os::unix::net::UnixDatagram;

use supervisor::{notify_ready, notify_status, notify_stopping};

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    String::from_utf8(buf[..n].to_vec()).expect("UTF-8")
}

#[test]
fn notifications_reach_the_socket_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();

    // Without NOTIFY_SOCKET: silently nothing.
    std::env::remove_var("NOTIFY_SOCKET");
    notify_status("ignored");
    notify_ready();
    assert!(socket.recv(&mut [0u8; 64]).is_err(), "nothing may be sent");

    std::env::set_var("NOTIFY_SOCKET", &path);
    socket.set_nonblocking(false).unwrap();
    notify_status("etcd: joining\nas learner");
    assert_eq!(recv(&socket), "STATUS=etcd: joining as learner\n");
    notify_ready();
    assert_eq!(recv(&socket), "READY=1\n");
    notify_stopping();
    assert_eq!(recv(&socket), "STOPPING=1\n");
    // The variable stays, so later updates still arrive.
    notify_status("ready");
    assert_eq!(recv(&socket), "STATUS=ready\n");
    std::env::remove_var("NOTIFY_SOCKET");
}
