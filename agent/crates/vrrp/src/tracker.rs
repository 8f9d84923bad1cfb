//! Weighted health checks, built in (keepalived's `track_script` with
//! `weight`, `fall` and `rise`, without an external script).
//!
//! Each [`CheckSpec`] is an HTTP(S) GET, repeated every `interval`; a
//! check passes on a 2xx answer whose body contains `expect_body` (when
//! set), within `timeout`. A check's verdict turns to *failing* after
//! `fall` consecutive failures and back to *passing* after `rise`
//! consecutive successes; it starts *failing*. A check that only times
//! out (the server is there but busy) turns *slow* instead, after
//! `slow_fall` consecutive timeouts, and costs its `slow_weight`: see
//! [`Verdict`] and [`CheckSpec::apiserver_readyz`].
//!
//! A failing check lowers the node's priority by its weight (for example
//! the local API server's `/readyz`). Quorum is **not** a tracked verdict:
//! a cached "etcd was healthy a moment ago" never lets a node take or keep
//! the VIP. Quorum is proven afresh by [`crate::proof`] for every claim and
//! renewed under a lease (see [`crate::machine`]).
//!
//! [`TrackerState`] is the pure part (verdicts → [`Health`]); [`spawn`]
//! runs the checks on tokio and publishes the health on a watch channel,
//! which is what [`crate::Vrrp::spawn`] takes. An embedding program can
//! also publish its own `Health` on such a channel instead (its `quorum:
//! false` is a veto: the node gives up and never claims the VIP).

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::machine::Health;
pub use crate::verdict::{Outcome, Standing, Verdict};

/// What a failing check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckRole {
    /// Failing lowers the priority by this much.
    Weight(u8),
}

/// Optional TLS material for a check (etcd with client-certificate auth).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA bundle to verify the server with (else the web PKI roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate (needs `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
}

/// One HTTP(S) check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// Name for logs.
    pub name: String,
    /// URL to GET.
    pub url: String,
    /// What failing means.
    pub role: CheckRole,
    /// Time between the starts of two checks.
    pub interval: Duration,
    /// Time allowed for one check.
    pub timeout: Duration,
    /// Consecutive failures that make the verdict failing.
    pub fall: u32,
    /// Consecutive timeouts ([`Outcome::Slow`]) that make a passing
    /// check slow ([`Standing::Slow`]); `fall` when smaller.
    pub slow_fall: u32,
    /// How much a slow check lowers the priority (instead of its
    /// weight). Equal to the weight: slow counts as failing.
    pub slow_weight: u8,
    /// Consecutive successes that make it passing again.
    pub rise: u32,
    /// Substring the body must contain.
    pub expect_body: Option<String>,
    /// TLS material.
    pub tls: TlsFiles,
}

impl CheckSpec {
    /// The local API server check, `GET https://127.0.0.1:{port}/readyz`
    /// expecting `ok`, lowering the priority by `weight` while it fails
    /// (every 2 s, 5 s timeout, fall 3, slow fall 10, rise 2). A stopped
    /// API server refuses the connection at once and leaves the rotation
    /// after three checks (~6 s); so does one answering an error (not
    /// ready: 500). The 5 s timeout (keepalived's default connect timeout)
    /// keeps a busy but working one in: with a 1 s timeout, a master
    /// starting its control plane under TCG failed the check for minutes
    /// and the VIP stayed on a node with no API server at all.
    ///
    /// Only timeouts in a row take ten checks (`slow_fall`, at least 50 s,
    /// the fall of the keepalived check in kubeadm's HA guide) and then
    /// cost `slow_weight` instead of `weight`: a busy API server still
    /// serves what reaches it, and moving the VIP to another master cuts
    /// every connection through the VIP for a master that is usually no
    /// less busy. In real-kubeadm run 12 the two ready masters' checks
    /// timed out in streaks of 8 s to 2.5 min while a third joined through
    /// the VIP, the VIP moved five times in six minutes, and the join
    /// failed on requests cut short.
    pub fn apiserver_readyz(port: u16, weight: u8, slow_weight: u8, tls: TlsFiles) -> Self {
        CheckSpec {
            name: "apiserver".to_owned(),
            url: format!("https://127.0.0.1:{port}/readyz"),
            role: CheckRole::Weight(weight),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            fall: 3,
            slow_fall: 10,
            slow_weight,
            rise: 2,
            expect_body: Some("ok".to_owned()),
            tls,
        }
    }
}

/// Verdicts of all checks, and the [`Health`] they add up to. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerState {
    /// Per check: its role, its weight while [`Standing::Slow`], its
    /// verdict.
    checks: Vec<(CheckRole, u8, Verdict)>,
}

impl TrackerState {
    /// From the checks' roles and fall/rise.
    pub fn new(specs: &[CheckSpec]) -> Self {
        TrackerState {
            checks: specs
                .iter()
                .map(|s| {
                    let verdict = Verdict::with_slow_fall(s.fall, s.slow_fall, s.rise);
                    (s.role, s.slow_weight, verdict)
                })
                .collect(),
        }
    }

    /// Where check `index` stands (`None`: no such check).
    pub fn standing(&self, index: usize) -> Option<Standing> {
        self.checks.get(index).map(|(_, _, v)| v.standing())
    }

    /// Records check `index`'s result; returns true when its verdict
    /// flipped. An out-of-range index is ignored.
    pub fn record(&mut self, index: usize, outcome: Outcome) -> bool {
        self.checks
            .get_mut(index)
            .is_some_and(|(_, _, v)| v.record(outcome))
    }

    /// The penalty is the sum of the failing checks' weights (a slow
    /// check's slow weight); the tracker never
    /// vetoes quorum (see the module docs).
    pub fn health(&self) -> Health {
        let penalty = self
            .checks
            .iter()
            .map(|(r, slow, v)| match (r, v.standing()) {
                (_, Standing::Passing) => 0,
                (CheckRole::Weight(_), Standing::Slow) => u32::from(*slow),
                (CheckRole::Weight(w), Standing::Failing) => u32::from(*w),
            })
            .sum::<u32>()
            .min(255) as u8;
        Health {
            quorum: true,
            penalty,
        }
    }
}

/// Errors building a check.
#[derive(Debug, Error)]
pub enum TrackerError {
    /// A TLS file could not be read.
    #[error("check {check}: reading {path}: {source}")]
    ReadTls {
        /// Check name.
        check: String,
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file did not parse, or the client could not be built.
    #[error("check {check}: {what}: {source}")]
    Client {
        /// Check name.
        check: String,
        /// What was being set up.
        what: &'static str,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// A client certificate without a key or the other way round.
    #[error("check {check}: a client certificate needs both cert and key")]
    HalfIdentity {
        /// Check name.
        check: String,
    },
}

fn read(check: &str, path: &PathBuf) -> Result<Vec<u8>, TrackerError> {
    std::fs::read(path).map_err(|source| TrackerError::ReadTls {
        check: check.to_owned(),
        path: path.clone(),
        source,
    })
}

/// The HTTP(S) client of a local check (also the quorum prover's): no
/// proxy from the environment, `timeout` for the connection and the whole
/// request, the optional CA and client identity of `tls`. `name` names the
/// check in errors.
pub(crate) fn http_client(
    name: &str,
    timeout: Duration,
    tls: &TlsFiles,
) -> Result<reqwest::Client, TrackerError> {
    let err = |what| {
        let check = name.to_owned();
        move |source| TrackerError::Client {
            check,
            what,
            source,
        }
    };
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout);
    if let Some(ca) = &tls.ca {
        let cert = reqwest::Certificate::from_pem(&read(name, ca)?).map_err(err("CA"))?;
        b = b.add_root_certificate(cert);
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let mut pem = read(name, cert)?;
            pem.push(b'\n');
            pem.extend(read(name, key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(err("client certificate"))?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(TrackerError::HalfIdentity {
                check: name.to_owned(),
            })
        }
    }
    b.build().map_err(err("HTTP client"))
}

fn client(spec: &CheckSpec) -> Result<reqwest::Client, TrackerError> {
    http_client(&spec.name, spec.timeout, &spec.tls)
}

/// One check: its outcome, and why when it did not pass.
async fn probe(client: &reqwest::Client, spec: &CheckSpec) -> (Outcome, Option<String>) {
    crate::http_check::probe(client, &spec.url, spec.expect_body.as_deref()).await
}

/// A running tracker; dropping it stops the checks.
#[derive(Debug)]
pub struct Tracker {
    health: watch::Receiver<Health>,
    _tasks: JoinSet<()>,
}

impl Tracker {
    /// The health channel to pass to [`crate::Vrrp::spawn`].
    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }
}

/// Starts the checks on the current tokio runtime; with no checks the
/// health is [`Health::OK`] for good.
pub fn spawn(specs: Vec<CheckSpec>) -> Result<Tracker, TrackerError> {
    let clients = specs.iter().map(client).collect::<Result<Vec<_>, _>>()?;
    let mut state = TrackerState::new(&specs);
    let (tx, rx) = watch::channel(state.health());
    let (results_tx, mut results) = mpsc::channel::<(usize, Outcome)>(16);
    let mut tasks = JoinSet::new();
    for (index, (spec, client)) in specs.clone().into_iter().zip(clients).enumerate() {
        let results_tx = results_tx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(spec.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (outcome, why) = probe(&client, &spec).await;
                if let Some(why) = &why {
                    tracing::debug!(check = %spec.name, url = %spec.url, ?outcome, %why, "check failed");
                }
                if results_tx.send((index, outcome)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(results_tx);
    tasks.spawn(async move {
        while let Some((index, outcome)) = results.recv().await {
            if state.record(index, outcome) {
                let name = specs.get(index).map(|s| s.name.as_str()).unwrap_or("?");
                let standing = state.standing(index);
                tracing::info!(check = name, ?standing, "check verdict changed");
                let health = state.health();
                tx.send_replace(health);
            }
        }
    });
    Ok(Tracker {
        health: rx,
        _tasks: tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_check_falls_slowly_on_timeouts() {
        let spec = CheckSpec::apiserver_readyz(6443, 50, 10, TlsFiles::default());
        assert_eq!((spec.fall, spec.slow_fall, spec.slow_weight), (3, 10, 10));
    }

    #[test]
    fn a_slow_check_costs_its_slow_weight() {
        let mut spec = CheckSpec::apiserver_readyz(6443, 50, 10, TlsFiles::default());
        (spec.fall, spec.slow_fall, spec.rise) = (1, 1, 1);
        let mut s = TrackerState::new(&[spec]);
        assert_eq!(s.health().penalty, 50, "starts failing");
        s.record(0, Outcome::Pass);
        assert_eq!(s.health(), Health::OK);
        s.record(0, Outcome::Slow);
        assert_eq!(s.standing(0), Some(Standing::Slow));
        assert_eq!(s.health().penalty, 10);
        assert_eq!(s.standing(3), None);
    }

    #[test]
    fn health_adds_up_the_failing_weights_and_never_vetoes_quorum() {
        let tls = TlsFiles::default();
        let mut api = CheckSpec::apiserver_readyz(6443, 50, 50, tls.clone());
        api.rise = 1;
        api.fall = 1;
        assert_eq!(api.url, "https://127.0.0.1:6443/readyz");
        let mut other = api.clone();
        other.role = CheckRole::Weight(250);
        let mut s = TrackerState::new(&[api, other]);
        // Everything starts failing: full penalty (capped), quorum is not
        // the tracker's to say.
        assert_eq!(
            s.health(),
            Health {
                quorum: true,
                penalty: 255
            }
        );
        s.record(1, Outcome::Pass);
        assert_eq!(
            s.health(),
            Health {
                quorum: true,
                penalty: 50
            }
        );
        s.record(0, Outcome::Pass);
        assert_eq!(s.health(), Health::OK);
        assert!(!s.record(9, Outcome::Pass), "unknown index ignored");
    }

    #[test]
    fn no_checks_means_ok() {
        assert_eq!(TrackerState::new(&[]).health(), Health::OK);
    }

    #[test]
    fn half_identity_refused() {
        let mut spec = CheckSpec::apiserver_readyz(6443, 50, 50, TlsFiles::default());
        spec.tls.cert = Some("/nonexistent/cert.pem".into());
        assert!(matches!(
            client(&spec),
            Err(TrackerError::HalfIdentity { .. })
        ));
        spec.tls.key = Some("/nonexistent/key.pem".into());
        let err = client(&spec).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[tokio::test]
    async fn http_check_against_local_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A one-shot-per-connection HTTP server on loopback answering like
        // a /readyz, ready first, then not.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for body in ["ok", "[-]etcd failed: reason withheld"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let mut spec = CheckSpec::apiserver_readyz(6443, 50, 50, TlsFiles::default());
        spec.url = format!("http://{addr}/readyz");
        let c = client(&spec).unwrap();
        assert_eq!(probe(&c, &spec).await, (Outcome::Pass, None));
        let (outcome, why) = probe(&c, &spec).await;
        assert_eq!(outcome, Outcome::Fail);
        let why = why.unwrap_or_default();
        assert!(why.contains("\"ok\""), "{why}");
        server.await.unwrap();
        // Nothing listens any more: connection refused is a failure.
        assert_eq!(probe(&c, &spec).await.0, Outcome::Fail);

        // A server that accepts and never answers: a timeout, slow.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (s, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        spec.url = format!("http://{addr}/readyz");
        spec.timeout = Duration::from_millis(300);
        let c = client(&spec).unwrap();
        let (outcome, why) = probe(&c, &spec).await;
        assert_eq!(outcome, Outcome::Slow, "{why:?}");
        hold.abort();
    }
}
