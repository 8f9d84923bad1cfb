//! `sd_notify(3)` for the agent's own unit (`Type=notify`): readiness and the
//! status line `systemctl status` shows. Both are no-ops when the agent was
//! not started by systemd (no `NOTIFY_SOCKET`), e.g. in network-namespace
//! tests.

use sd_notify::NotifyState;
use tracing::debug;

/// Sets the unit's status line (`STATUS=`), e.g. `etcd: joining as learner`.
/// Newlines would end the field, so they become spaces.
pub fn notify_status(status: &str) {
    let line = status_line(status);
    send(&[NotifyState::Status(&line)]);
}

/// Tells systemd the agent is ready (`READY=1`): its start job finishes.
pub fn notify_ready() {
    send(&[NotifyState::Ready]);
}

/// Tells systemd the agent is shutting down (`STOPPING=1`).
pub fn notify_stopping() {
    send(&[NotifyState::Stopping]);
}

/// The status text as one line.
fn status_line(status: &str) -> String {
    status
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn send(states: &[NotifyState<'_>]) {
    // `false`: keep NOTIFY_SOCKET so later updates reach systemd too. Children
    // of the process supervisor do not inherit it (their env is cleared).
    if let Err(error) = sd_notify::notify(false, states) {
        // The status line is advisory: the journal has the same information.
        debug!(%error, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_line("phase: a\nb\r\tc"), "phase: a b  c");
        assert_eq!(
            status_line("discovering (2/3 masters)"),
            "discovering (2/3 masters)"
        );
    }
}
