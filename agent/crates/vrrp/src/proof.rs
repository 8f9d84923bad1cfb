//! The fresh proof of quorum: one **linearizable read** on the local etcd
//! member (`POST <client URL>/v3/kv/range` through etcd's JSON gateway,
//! serializable off, so etcd answers only after its leader confirmed its
//! leadership with a heartbeat round acknowledged by a majority, after the
//! request arrived: etcd's ReadIndex).
//!
//! A success therefore shows that, at some moment after the request was
//! issued, the local member was connected (through the leader) to a
//! majority of the voting members. That is what the state machine's
//! lease counts from ([`crate::machine::ProofParams`]). A member on a
//! minority side, or one whose cluster is electing a leader, cannot
//! answer; the request times out or fails. Nothing is cached: every
//! [`EtcdProver::prove`] is a new request.
//!
//! Why not `/health`: in etcd 3.4 it is a quorum *write* through the
//! raft log (a v2 `QGET` proposal, fsynced on a majority) every time,
//! slower under disk load and growing the log; the read needs no disk.

use std::time::Duration;

use thiserror::Error;

use crate::tracker::{http_client, TlsFiles, TrackerError};

/// The key read (it need not exist: an empty answer is a valid proof).
/// Base64 of `kubeboot/vip/proof`, as etcd's JSON gateway wants it.
const PROOF_KEY_B64: &str = "a3ViZWJvb3QvdmlwL3Byb29m";

/// Default time allowed for one proof request.
pub const DEFAULT_PROOF_TIMEOUT: Duration = Duration::from_secs(1);

/// At most this many proofs wait for an answer at once (a hung member with
/// claims retried every 100 ms and a 1 s timeout needs 10; beyond this the
/// shell reports [`ProofError::Busy`] without sending).
pub const MAX_PROOFS_IN_FLIGHT: usize = 8;

/// Why a proof failed (reported in the status; the state machine only
/// needs to know that it failed).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProofError {
    /// No answer in time, or the connection failed.
    #[error("{url}: {reason}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// etcd answered with an error (no leader, timeout inside etcd, auth).
    #[error("{url}: HTTP {status}: {body}")]
    Refused {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Not sent: too many earlier proofs still wait for an answer (the
    /// member hangs; more requests would only pile up).
    #[error("{in_flight} earlier proofs still unanswered")]
    Busy {
        /// Proofs in flight.
        in_flight: usize,
    },
    /// A 2xx answer that is not a range response.
    #[error("{url}: unexpected answer {body:?}")]
    Unexpected {
        /// The request URL.
        url: String,
        /// The start of the body.
        body: String,
    },
}

/// Issues linearizable reads on one etcd member.
#[derive(Debug, Clone)]
pub struct EtcdProver {
    client: reqwest::Client,
    url: String,
}

impl EtcdProver {
    /// A prover for the member at `client_url` (`http://` or `https://`,
    /// TLS material as for the tracker), each request bounded by
    /// `timeout` (connection included).
    pub fn new(client_url: &str, tls: TlsFiles, timeout: Duration) -> Result<Self, TrackerError> {
        Ok(EtcdProver {
            client: http_client("etcd quorum proof", timeout, &tls)?,
            url: format!("{}/v3/kv/range", client_url.trim_end_matches('/')),
        })
    }

    /// The request URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One linearizable read; `Ok` only for etcd's range response.
    pub async fn prove(&self) -> Result<(), ProofError> {
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"key\":\"{PROOF_KEY_B64}\",\"count_only\":true}}"
            ))
            .send()
            .await
            .map_err(|e| ProofError::Unreachable {
                url: self.url.clone(),
                reason: error_chain(&e),
            })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| ProofError::Unreachable {
            url: self.url.clone(),
            reason: error_chain(&e),
        })?;
        let head: String = body.chars().take(200).collect();
        if !status.is_success() {
            return Err(ProofError::Refused {
                url: self.url.clone(),
                status: status.as_u16(),
                body: head,
            });
        }
        // A range response always carries the cluster header.
        if !body.contains("\"header\"") || body.contains("\"error\"") {
            return Err(ProofError::Unexpected {
                url: self.url.clone(),
                body: head,
            });
        }
        Ok(())
    }
}

/// The error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-answer-per-connection HTTP server on loopback.
    async fn serve(answers: Vec<(u16, &'static str)>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            for (status, body) in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(req.starts_with("POST /v3/kv/range "), "{req}");
                assert!(req.contains(PROOF_KEY_B64), "{req}");
                assert!(!req.contains("serializable"), "must be linearizable: {req}");
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        (format!("http://{addr}/"), task)
    }

    #[tokio::test]
    async fn proof_is_a_range_answer_and_everything_else_fails() {
        let (url, server) = serve(vec![
            (200, r#"{"header":{"cluster_id":"1","raft_term":"2"}}"#),
            (
                503,
                r#"{"error":"etcdserver: request timed out","code":14}"#,
            ),
            (200, r#"{"error":"etcdserver: no leader"}"#),
            (200, "ok"),
        ])
        .await;
        let p = EtcdProver::new(&url, TlsFiles::default(), Duration::from_secs(2)).unwrap();
        assert_eq!(p.url(), format!("{url}v3/kv/range"));
        assert_eq!(p.prove().await, Ok(()));
        match p.prove().await {
            Err(ProofError::Refused {
                status: 503, body, ..
            }) => {
                assert!(body.contains("timed out"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.prove().await,
            Err(ProofError::Unexpected { .. })
        ));
        assert!(matches!(
            p.prove().await,
            Err(ProofError::Unexpected { .. })
        ));
        server.await.unwrap();
        // Nothing listens any more: unreachable, naming the cause.
        let err = p.prove().await.unwrap_err();
        assert!(matches!(err, ProofError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("/v3/kv/range"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_member_times_out_within_the_bound() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let p = EtcdProver::new(
            &format!("http://{addr}"),
            TlsFiles::default(),
            Duration::from_millis(300),
        )
        .unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(
            p.prove().await,
            Err(ProofError::Unreachable { .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        hold.abort();
    }
}
