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
//!
//! [`EtcdProver::shed_leadership`]: a VIP holder whose etcd member is the
//! raft leader hands the leadership to another voter (etcd's own
//! `MoveLeader`, what etcd does itself on a clean stop). Then the failure
//! of the holder's node never also takes the etcd leader with it: the
//! remaining majority can answer the next holder's proof at once instead
//! of after an election (1-2 s with etcd's default 1 s election timeout),
//! and the VIP moves in Master_Down_Interval plus one read. It changes no
//! membership and no data; a transfer takes about 100 ms.

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
    base: String,
    url: String,
}

/// What [`EtcdProver::shed_leadership`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The local member is not the leader: nothing to do.
    NotLeader,
    /// Leadership went to this member.
    Moved {
        /// The new leader's member id.
        to: u64,
    },
    /// The local member leads but no other voter follows it right now.
    NoTarget,
}

impl EtcdProver {
    /// A prover for the member at `client_url` (`http://` or `https://`,
    /// TLS material as for the tracker), each request bounded by
    /// `timeout` (connection included).
    pub fn new(client_url: &str, tls: TlsFiles, timeout: Duration) -> Result<Self, TrackerError> {
        let base = client_url.trim_end_matches('/').to_owned();
        Ok(EtcdProver {
            client: http_client("etcd quorum proof", timeout, &tls)?,
            url: format!("{base}/v3/kv/range"),
            base,
        })
    }

    /// POSTs `body` to `path` on the member at `base` (its JSON gateway);
    /// the parsed answer.
    async fn call_at(
        &self,
        base: &str,
        path: &str,
        body: String,
    ) -> Result<serde_json::Value, ProofError> {
        let url = format!("{base}{path}");
        let resp = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ProofError::Unreachable {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ProofError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let head: String = text.chars().take(200).collect();
        if !status.is_success() {
            return Err(ProofError::Refused {
                url,
                status: status.as_u16(),
                body: head,
            });
        }
        serde_json::from_str(&text).map_err(|_| ProofError::Unexpected { url, body: head })
    }

    async fn call(&self, path: &str, body: String) -> Result<serde_json::Value, ProofError> {
        self.call_at(&self.base, path, body).await
    }

    /// When the local member is the raft leader, moves the leadership to
    /// another voter: one that follows this leader right now (its own
    /// status names us as leader), the most caught-up of them (highest
    /// raft index; ties: lowest member id). See the module docs for why.
    pub async fn shed_leadership(&self) -> Result<Shed, ProofError> {
        let status = self.call("/v3/maintenance/status", "{}".to_owned()).await?;
        let me =
            member_id(&status["header"]["member_id"]).ok_or_else(|| ProofError::Unexpected {
                url: format!("{}/v3/maintenance/status", self.base),
                body: status.to_string().chars().take(200).collect(),
            })?;
        // No leader known (an election): nothing to hand over.
        if member_id(&status["leader"]) != Some(me) {
            return Ok(Shed::NotLeader);
        }
        let list = self
            .call("/v3/cluster/member/list", "{}".to_owned())
            .await?;
        let candidates: Vec<(u64, String)> = list["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| !m["isLearner"].as_bool().unwrap_or(false))
            // A member that never started has no name: not a target.
            .filter(|m| m["name"].as_str().is_some_and(|n| !n.is_empty()))
            .filter_map(|m| {
                let id = member_id(&m["ID"]).filter(|id| *id != me)?;
                let url = m["clientURLs"].as_array()?.first()?.as_str()?;
                Some((id, url.trim_end_matches('/').to_owned()))
            })
            .collect();
        let probes = candidates.iter().map(|(id, url)| async move {
            let answer = tokio::time::timeout(
                PEER_STATUS_TIMEOUT,
                self.call_at(url, "/v3/maintenance/status", "{}".to_owned()),
            )
            .await;
            match answer {
                Ok(Ok(s)) if member_id(&s["leader"]) == Some(me) => {
                    Some((member_id(&s["raftIndex"]).unwrap_or(0), *id))
                }
                _ => None,
            }
        });
        let following = futures::future::join_all(probes).await;
        let Some((_, to)) = following
            .into_iter()
            .flatten()
            .max_by_key(|(index, id)| (*index, std::cmp::Reverse(*id)))
        else {
            return Ok(Shed::NoTarget);
        };
        self.call(
            "/v3/maintenance/transfer-leadership",
            format!("{{\"targetID\":\"{to}\"}}"),
        )
        .await?;
        Ok(Shed::Moved { to })
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

/// A member id (or index) as etcd's JSON gateway writes 64-bit numbers:
/// a decimal string; 0 means none.
fn member_id(v: &serde_json::Value) -> Option<u64> {
    v.as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|id| *id != 0)
}

/// Time allowed to another member's status answer when choosing whom to
/// hand the leadership to.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(300);

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

    /// A loopback server answering each request by its path.
    async fn gateway(
        answers: Vec<(&'static str, &'static str)>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (path, body) in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(req.starts_with(&format!("POST {path} ")), "{req}");
                seen.push(req);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
            seen
        });
        (format!("http://{addr}"), task)
    }

    const ME: &str = "11899211072982767986";

    fn status(member: &str, leader: &str, index: u64) -> String {
        format!(
            r#"{{"header":{{"member_id":"{member}"}},"leader":"{leader}","raftIndex":"{index}"}}"#
        )
    }

    #[tokio::test]
    async fn a_leading_member_hands_leadership_to_the_most_caught_up_follower() {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let (b, b_srv) = gateway(vec![("/v3/maintenance/status", leak(status("5", ME, 10)))]).await;
        let (c, c_srv) = gateway(vec![("/v3/maintenance/status", leak(status("6", ME, 12)))]).await;
        // Follows another leader (it is on the other side of something).
        let (d, d_srv) = gateway(vec![(
            "/v3/maintenance/status",
            leak(status("7", "99", 50)),
        )])
        .await;
        let members = format!(
            r#"{{"members":[
            {{"ID":"5","name":"b","clientURLs":["{b}"]}},
            {{"ID":"{ME}","name":"a","clientURLs":["http://127.0.0.1:1"]}},
            {{"ID":"6","name":"c","clientURLs":["{c}/"]}},
            {{"ID":"7","name":"d","clientURLs":["{d}"]}},
            {{"ID":"8","name":"e","clientURLs":["http://127.0.0.1:1"]}},
            {{"ID":"42","name":"f","isLearner":true,"clientURLs":["{b}"]}},
            {{"ID":"43","name":"","peerURLs":["http://x:2380"]}}]}}"#
        );
        let (url, server) = gateway(vec![
            ("/v3/maintenance/status", leak(status(ME, ME, 12))),
            ("/v3/cluster/member/list", leak(members)),
            ("/v3/maintenance/transfer-leadership", "{}"),
        ])
        .await;
        let p = EtcdProver::new(&url, TlsFiles::default(), Duration::from_secs(2)).unwrap();
        assert_eq!(p.shed_leadership().await, Ok(Shed::Moved { to: 6 }));
        let seen = server.await.unwrap();
        assert!(seen[2].contains(r#"{"targetID":"6"}"#), "{}", seen[2]);
        for s in [b_srv, c_srv, d_srv] {
            s.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_follower_a_leaderless_member_or_a_lone_leader_changes_nothing() {
        let lone = status("5", "5", 3);
        let (url, server) = gateway(vec![
            (
                "/v3/maintenance/status",
                r#"{"header":{"member_id":"5"},"leader":"6"}"#,
            ),
            (
                "/v3/maintenance/status",
                r#"{"header":{"member_id":"5"},"errors":["etcdserver: no leader"]}"#,
            ),
            ("/v3/maintenance/status", Box::leak(lone.into_boxed_str())),
            (
                "/v3/cluster/member/list",
                r#"{"members":[{"ID":"5","name":"a"}]}"#,
            ),
            ("/v3/maintenance/status", r#"{"header":{}}"#),
        ])
        .await;
        let p = EtcdProver::new(&url, TlsFiles::default(), Duration::from_secs(2)).unwrap();
        assert_eq!(p.shed_leadership().await, Ok(Shed::NotLeader));
        assert_eq!(p.shed_leadership().await, Ok(Shed::NotLeader));
        assert_eq!(p.shed_leadership().await, Ok(Shed::NoTarget));
        assert!(matches!(
            p.shed_leadership().await,
            Err(ProofError::Unexpected { .. })
        ));
        server.await.unwrap();
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
