//! Helpers shared by `tests/netns.rs` and `benches/haproxy.rs` (both
//! include this file with `#[path]`), on top of the VRRP tests' lab.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// A tokio runtime whose threads live in network namespace `ns`: built on
/// a thread that entered `ns`, so its workers (and their blocking pool)
/// inherit it. Work must be `spawn`ed onto it (`block_on` polls on the
/// caller's thread, in the caller's namespace).
pub fn runtime_in(ns: &str) -> tokio::runtime::Runtime {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on a valid namespace fd; affects this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building a runtime")
    })
    .join()
    .expect("the runtime thread")
}
