//! What a service is ([`ServiceSpec`]) and what state it is in ([`ServiceState`]).
//!
//! Both backends take the same spec. [`ServiceSpec::validate`] holds the rules
//! every backend needs (a safe name, a program to run, well-formed
//! environment); the systemd renderer adds the rules of unit-file syntax on
//! top (see [`crate::unit`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::SupervisorError;

/// Longest service name we accept: systemd's limit on unit names (255) minus
/// the `.service` suffix.
pub const MAX_NAME_LEN: usize = 255 - ".service".len();

/// A long-running service the agent wants running: `etcd`, for example.
///
/// The same spec yields a systemd unit (`/run/systemd/system/<name>.service`)
/// or a supervised child process. Two specs that compare equal describe the
/// same service: starting an already running service with an equal spec does
/// nothing, with a different one restarts it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The bare service name, e.g. `etcd` (no `.service` suffix): letters,
    /// digits and `-_.:@`.
    pub name: String,
    /// One line shown by `systemctl status` (and in the process log header).
    pub description: String,
    /// The program and its arguments: `exec[0]` is an absolute path or a bare
    /// program name looked up in `PATH`.
    pub exec: Vec<String>,
    /// Environment of the service. The service does not inherit the agent's
    /// environment (as under systemd); `PATH` defaults to systemd's default.
    pub env: BTreeMap<String, String>,
    /// Run as this user instead of root.
    pub user: Option<String>,
    /// Working directory (absolute).
    pub working_dir: Option<PathBuf>,
    /// Units to order this one after. An entry without a unit suffix means a
    /// service (`containerd` → `containerd.service`).
    pub after: Vec<String>,
    /// Seconds to wait before restarting the service after it exits
    /// unexpectedly. It is always restarted, whatever its exit status.
    pub restart_sec: u32,
}

/// The state of a service, in systemd's terms (its `ActiveState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServiceState {
    /// Not running (never started, or stopped).
    Inactive,
    /// Starting, or waiting to be restarted after it exited.
    Activating,
    /// Running.
    Active,
    /// Stopping.
    Deactivating,
    /// Failed and not going to be restarted by itself.
    Failed {
        /// Why, as reported by the backend.
        reason: String,
    },
}

impl ServiceState {
    /// Whether the service is running or on its way to running, so a start
    /// with an unchanged spec has nothing to do.
    pub fn is_up(&self) -> bool {
        matches!(self, ServiceState::Active | ServiceState::Activating)
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceState::Inactive => f.write_str("inactive"),
            ServiceState::Activating => f.write_str("activating"),
            ServiceState::Active => f.write_str("active"),
            ServiceState::Deactivating => f.write_str("deactivating"),
            ServiceState::Failed { reason } => write!(f, "failed ({reason})"),
        }
    }
}

impl ServiceSpec {
    /// Checks the rules every backend relies on. Returns
    /// [`SupervisorError::InvalidSpec`] naming the first problem.
    pub fn validate(&self) -> Result<(), SupervisorError> {
        validate_name(&self.name)?;
        let invalid = |reason: String| SupervisorError::InvalidSpec {
            name: self.name.clone(),
            reason,
        };
        if has_control(&self.description) {
            return Err(invalid("description contains a control character".into()));
        }
        let Some(program) = self.exec.first() else {
            return Err(invalid("exec is empty: no program to run".into()));
        };
        if program.is_empty() {
            return Err(invalid("exec[0] (the program) is empty".into()));
        }
        if let Some(i) = self.exec.iter().position(|a| a.contains('\0')) {
            return Err(invalid(format!("exec[{i}] contains a NUL byte")));
        }
        for (key, value) in &self.env {
            if !is_env_name(key) {
                return Err(invalid(format!(
                    "environment variable name {key:?} is not [A-Za-z_][A-Za-z0-9_]*"
                )));
            }
            if value.contains('\0') {
                return Err(invalid(format!(
                    "environment variable {key} contains a NUL byte"
                )));
            }
        }
        if let Some(user) = &self.user {
            if !is_user_name(user) {
                return Err(invalid(format!(
                    "user {user:?} is not a valid user name or numeric uid"
                )));
            }
        }
        if let Some(dir) = &self.working_dir {
            let text = dir.to_str().ok_or_else(|| {
                invalid(format!("working directory {} is not UTF-8", dir.display()))
            })?;
            if !dir.is_absolute() {
                return Err(invalid(format!(
                    "working directory {text:?} is not absolute"
                )));
            }
            if has_control(text) {
                return Err(invalid(
                    "working directory contains a control character".into(),
                ));
            }
        }
        for unit in &self.after {
            if !is_unit_name(unit) {
                return Err(invalid(format!("after: {unit:?} is not a valid unit name")));
            }
        }
        Ok(())
    }
}

/// Checks a bare service name (also used for log file names, so no `/`).
pub(crate) fn validate_name(name: &str) -> Result<(), SupervisorError> {
    let invalid = |reason: &str| SupervisorError::InvalidSpec {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("the name is longer than 247 bytes"));
    }
    if name.ends_with(".service") {
        return Err(invalid("give the bare name, without the .service suffix"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(invalid("the name must not start with '.' or '-'"));
    }
    if !name.chars().all(is_unit_char) {
        return Err(invalid(
            "the name may only contain letters, digits and -_.:@",
        ));
    }
    Ok(())
}

/// Characters systemd allows in unit names (minus `\`, which only appears in
/// escaped instance names and which we never generate).
fn is_unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')
}

fn is_unit_name(unit: &str) -> bool {
    !unit.is_empty()
        && unit.len() <= 255
        && !unit.starts_with('.')
        && !unit.starts_with('-')
        && unit.chars().all(is_unit_char)
}

fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A conservative user name (the portable subset systemd accepts in strict
/// mode) or a numeric uid.
fn is_user_name(user: &str) -> bool {
    if !user.is_empty() && user.len() <= 10 && user.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    let mut chars = user.chars();
    user.len() <= 31
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd() -> ServiceSpec {
        ServiceSpec {
            name: "etcd".into(),
            description: "etcd key-value store".into(),
            exec: vec!["/usr/bin/etcd".into(), "--name=m1".into()],
            env: BTreeMap::from([("ETCD_UNSUPPORTED_ARCH".into(), "arm64".into())]),
            user: Some("etcd".into()),
            working_dir: Some("/var/lib/etcd".into()),
            after: vec!["network-online.target".into(), "containerd".into()],
            restart_sec: 5,
        }
    }

    #[test]
    fn a_complete_spec_is_valid() {
        etcd().validate().unwrap();
    }

    #[test]
    fn invalid_specs_name_the_problem() {
        type Edit = fn(&mut ServiceSpec);
        let cases: &[(Edit, &str)] = &[
            (|s| s.name = String::new(), "empty"),
            (
                |s| s.name = "etcd.service".into(),
                "without the .service suffix",
            ),
            (|s| s.name = "../etc/passwd".into(), "must not start"),
            (|s| s.name = "etc/passwd".into(), "may only contain"),
            (|s| s.name = "x".repeat(248), "longer than"),
            (|s| s.description = "two\nlines".into(), "description"),
            (|s| s.exec.clear(), "exec is empty"),
            (|s| s.exec = vec![String::new()], "exec[0]"),
            (|s| s.exec.push("a\0b".into()), "exec[2] contains a NUL"),
            (|s| _ = s.env.insert("1BAD".into(), "x".into()), "1BAD"),
            (|s| _ = s.env.insert("A=B".into(), "x".into()), "A=B"),
            (|s| s.user = Some("root; rm".into()), "user"),
            (
                |s| s.working_dir = Some("relative/dir".into()),
                "not absolute",
            ),
            (|s| s.after = vec!["a b.service".into()], "after"),
        ];
        for (edit, expected) in cases {
            let mut spec = etcd();
            edit(&mut spec);
            let err = spec.validate().expect_err(expected).to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn numeric_uids_and_usual_names_are_users() {
        for ok in ["etcd", "_apt", "systemd-network", "0", "1000"] {
            assert!(is_user_name(ok), "{ok}");
        }
        for bad in ["", "-x", "a b", "a:b", "é", "12345678901"] {
            assert!(!is_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn is_up_covers_running_and_starting_only() {
        assert!(ServiceState::Active.is_up());
        assert!(ServiceState::Activating.is_up());
        assert!(!ServiceState::Inactive.is_up());
        assert!(!ServiceState::Deactivating.is_up());
        assert!(!ServiceState::Failed { reason: "x".into() }.is_up());
    }
}
