//! [`FakeSupervisor`]: records every call, keeps a plausible state per
//! service, and fails on demand. For unit tests of code that drives a
//! [`Supervisor`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::{ServiceSpec, ServiceState, Supervisor, SupervisorError};

/// One recorded call to a [`FakeSupervisor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `start(spec)`.
    Start(ServiceSpec),
    /// `stop(name)`.
    Stop(String),
    /// `restart(name)`.
    Restart(String),
    /// `state(name)`.
    State(String),
}

impl Call {
    /// The service the call was about.
    pub fn name(&self) -> &str {
        match self {
            Call::Start(spec) => &spec.name,
            Call::Stop(name) | Call::Restart(name) | Call::State(name) => name,
        }
    }
}

/// The operations a failure can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Supervisor::start`].
    Start,
    /// [`Supervisor::stop`].
    Stop,
    /// [`Supervisor::restart`].
    Restart,
    /// [`Supervisor::state`].
    State,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
            Op::State => "state",
        }
    }
}

/// A [`Supervisor`] that runs nothing. `start` makes a service `Active`,
/// `stop` makes it `Inactive`; failed calls change nothing but are recorded.
#[derive(Debug, Default)]
pub struct FakeSupervisor {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    specs: HashMap<String, ServiceSpec>,
    states: HashMap<String, ServiceState>,
    failures: HashMap<Op, VecDeque<String>>,
}

impl FakeSupervisor {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls (not the states).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// The spec of the last successful `start` of `name`.
    pub fn spec(&self, name: &str) -> Option<ServiceSpec> {
        self.lock().specs.get(name).cloned()
    }

    /// Makes the next call of `op` fail with [`SupervisorError::Injected`]
    /// carrying `message`. Queued failures are used up one per call.
    pub fn fail_next(&self, op: Op, message: impl Into<String>) {
        self.lock()
            .failures
            .entry(op)
            .or_default()
            .push_back(message.into());
    }

    /// Sets the state `state(name)` reports, e.g. to simulate a crash.
    pub fn set_state(&self, name: &str, state: ServiceState) {
        self.lock().states.insert(name.to_string(), state);
    }

    /// Records `call` and returns the injected failure for `op`, if any.
    fn record(&self, op: Op, call: Call) -> Result<MutexGuard<'_, Inner>, SupervisorError> {
        let mut inner = self.lock();
        let name = call.name().to_string();
        inner.calls.push(call);
        if let Some(message) = inner.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            return Err(SupervisorError::Injected {
                op: op.as_str(),
                name,
                message,
            });
        }
        Ok(inner)
    }
}

#[async_trait]
impl Supervisor for FakeSupervisor {
    async fn start(&self, spec: &ServiceSpec) -> Result<(), SupervisorError> {
        let mut inner = self.record(Op::Start, Call::Start(spec.clone()))?;
        spec.validate()?;
        inner.specs.insert(spec.name.clone(), spec.clone());
        inner.states.insert(spec.name.clone(), ServiceState::Active);
        Ok(())
    }

    async fn stop(&self, name: &str) -> Result<(), SupervisorError> {
        let mut inner = self.record(Op::Stop, Call::Stop(name.to_string()))?;
        inner
            .states
            .insert(name.to_string(), ServiceState::Inactive);
        Ok(())
    }

    async fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        let mut inner = self.record(Op::Restart, Call::Restart(name.to_string()))?;
        if !inner.specs.contains_key(name) {
            return Err(SupervisorError::UnknownService {
                name: name.to_string(),
            });
        }
        inner.states.insert(name.to_string(), ServiceState::Active);
        Ok(())
    }

    async fn state(&self, name: &str) -> Result<ServiceState, SupervisorError> {
        let inner = self.record(Op::State, Call::State(name.to_string()))?;
        Ok(inner
            .states
            .get(name)
            .cloned()
            .unwrap_or(ServiceState::Inactive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            exec: vec!["/usr/bin/etcd".into()],
            ..ServiceSpec::default()
        }
    }

    #[tokio::test]
    async fn records_calls_and_tracks_state() {
        let fake = FakeSupervisor::new();
        assert_eq!(fake.state("etcd").await.unwrap(), ServiceState::Inactive);
        fake.start(&spec("etcd")).await.unwrap();
        assert_eq!(fake.state("etcd").await.unwrap(), ServiceState::Active);
        fake.stop("etcd").await.unwrap();
        assert_eq!(fake.state("etcd").await.unwrap(), ServiceState::Inactive);
        fake.restart("etcd").await.unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                Call::State("etcd".into()),
                Call::Start(spec("etcd")),
                Call::State("etcd".into()),
                Call::Stop("etcd".into()),
                Call::State("etcd".into()),
                Call::Restart("etcd".into()),
            ]
        );
        assert_eq!(fake.spec("etcd"), Some(spec("etcd")));
    }

    #[tokio::test]
    async fn injected_failures_are_used_once_and_change_nothing() {
        let fake = FakeSupervisor::new();
        fake.fail_next(Op::Start, "disk full");
        let err = fake.start(&spec("etcd")).await.unwrap_err();
        assert!(
            matches!(&err, SupervisorError::Injected { op: "start", name, message } if name == "etcd" && message == "disk full"),
            "{err:?}"
        );
        assert_eq!(fake.state("etcd").await.unwrap(), ServiceState::Inactive);
        fake.start(&spec("etcd")).await.unwrap();
        assert_eq!(fake.state("etcd").await.unwrap(), ServiceState::Active);
        assert_eq!(fake.calls().len(), 4);
    }

    #[tokio::test]
    async fn restart_of_unknown_service_and_invalid_spec_fail() {
        let fake = FakeSupervisor::new();
        assert!(matches!(
            fake.restart("etcd").await,
            Err(SupervisorError::UnknownService { .. })
        ));
        assert!(matches!(
            fake.start(&spec("bad/name")).await,
            Err(SupervisorError::InvalidSpec { .. })
        ));
        fake.set_state(
            "etcd",
            ServiceState::Failed {
                reason: "crashed".into(),
            },
        );
        assert!(!fake.state("etcd").await.unwrap().is_up());
    }
}
