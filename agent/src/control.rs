//! The control socket: requests to the running agent (`agent etcd
//! snapshot`, `agent recover`). It sits beside the status socket ([`socket_beside`]:
//! `/run/kubeboot/control.sock` by default), mode 0600: only root may ask
//! the agent to write a snapshot of every Secret.
//!
//! Protocol: connect, write one JSON [`Request`], shut down the write side,
//! read one JSON [`Response`] until EOF. Kept apart from the status socket,
//! whose clients read without writing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::etcd::snapshot::{Reason, SnapshotMeta, Snapshotter};
use crate::recovery::{RecoverOutcome, RecoverRequest};
use crate::socket::{self, SocketError};

/// The control socket's file name, in the status socket's directory.
pub const SOCKET_NAME: &str = "control.sock";
/// The largest request read.
const MAX_REQUEST: u64 = 4096;

/// The control socket of an agent whose status socket is `status_socket`.
pub fn socket_beside(status_socket: &Path) -> PathBuf {
    status_socket.with_file_name(SOCKET_NAME)
}

/// Where the running agent's snapshotter appears once the local etcd
/// member is a healthy voter (set once; empty on workers).
pub type SnapshotSlot = Arc<OnceLock<Arc<Snapshotter>>>;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Take an etcd snapshot now (kept under the retention like any).
    EtcdSnapshot,
    /// Recover from quorum loss (see [`crate::recovery`]).
    Recover(RecoverRequest),
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// A snapshot was written and verified.
    Snapshot {
        /// Its path on the node.
        path: PathBuf,
        /// Its sidecar.
        meta: SnapshotMeta,
    },
    /// The recovery ran: its facts and steps.
    Recovered(RecoverOutcome),
    /// The request failed.
    Error {
        /// Why.
        error: String,
    },
}

/// Where the control socket hands `agent recover` to the run loop (which
/// owns etcd's supervisor and the plan) and gets the answer back.
pub type RecoverTx =
    tokio::sync::mpsc::Sender<(RecoverRequest, tokio::sync::oneshot::Sender<Response>)>;

/// Errors serving or using the control socket.
pub type ControlError = SocketError;

async fn answer(req: &[u8], slot: &SnapshotSlot, recover: Option<&RecoverTx>) -> Response {
    let request: Request = match serde_json::from_slice(req) {
        Ok(r) => r,
        Err(e) => {
            return Response::Error {
                error: format!("bad request: {e}"),
            }
        }
    };
    match request {
        Request::Recover(r) => {
            let Some(tx) = recover else {
                return Response::Error {
                    error: "this agent does not take recoveries".to_owned(),
                };
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            if tx.send((r, reply)).await.is_err() {
                return Response::Error {
                    error: "the agent's loop has stopped".to_owned(),
                };
            }
            answer.await.unwrap_or_else(|_| Response::Error {
                error: "the agent's loop dropped the recovery".to_owned(),
            })
        }
        Request::EtcdSnapshot => match slot.get() {
            None => Response::Error {
                error: "no etcd snapshots on this node yet: they start once this master's \
                        etcd member is a healthy voter (workers have none)"
                    .to_owned(),
            },
            Some(s) => match s.snapshot(Reason::OnDemand).await {
                Ok((path, meta)) => Response::Snapshot { path, meta },
                Err(e) => Response::Error {
                    error: e.to_string(),
                },
            },
        },
    }
}

/// Binds the control socket (replacing a stale one, mode 0600) and
/// answers requests until the task is dropped.
pub fn serve(path: &Path, slot: SnapshotSlot) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    serve_with(path, slot, None)
}

/// [`serve`], handing `agent recover` to the run loop through `recover`.
pub fn serve_with(
    path: &Path,
    slot: SnapshotSlot,
    recover: Option<RecoverTx>,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let listener = socket::bind("control", path, Some(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let (slot, recover) = (slot.clone(), recover.clone());
            tokio::spawn(async move {
                let (read, write) = sock.into_split();
                exchange(read, write, Framing::Eof, &slot, recover.as_ref()).await;
            });
        }
    }))
}

/// How a request ends on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// The client shuts its write side down (the Unix socket).
    Eof,
    /// One line (the remote endpoint: TLS half-close is not relied on).
    Line,
}

/// Reads one request from `read` (within 5 s, at most [`MAX_REQUEST`]
/// bytes), answers it on `write` and closes it: the one request loop of
/// the Unix socket and the remote endpoint ([`crate::remote`]).
pub(crate) async fn exchange<R, W>(
    read: R,
    mut write: W,
    framing: Framing,
    slot: &SnapshotSlot,
    recover: Option<&RecoverTx>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let mut req = Vec::new();
    let mut read = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        match framing {
            Framing::Eof => read.read_to_end(&mut req).await,
            Framing::Line => read.read_until(b'\n', &mut req).await,
        }
    })
    .await;
    let resp = match read {
        Ok(Ok(_)) => answer(&req, slot, recover).await,
        Ok(Err(e)) => Response::Error {
            error: format!("reading the request: {e}"),
        },
        Err(_) => Response::Error {
            error: "no request within 5 s".to_owned(),
        },
    };
    let mut body = serde_json::to_vec(&resp).unwrap_or_default();
    if framing == Framing::Line {
        body.push(b'\n');
    }
    if let Err(e) = write.write_all(&body).await {
        tracing::debug!("control client went away: {e}");
    }
    let _ = write.shutdown().await;
}

/// Sends `request` to the agent at `path` and returns its answer.
pub async fn ask(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let exchange = |reason: String| SocketError::Exchange {
        doing: "asking the agent at",
        path: path.to_owned(),
        reason,
    };
    let mut sock = socket::connect(path).await?;
    let body = serde_json::to_vec(request).map_err(|e| exchange(e.to_string()))?;
    sock.write_all(&body)
        .await
        .map_err(|e| exchange(e.to_string()))?;
    sock.shutdown().await.map_err(|e| exchange(e.to_string()))?;
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf)
        .await
        .map_err(|e| exchange(e.to_string()))?;
    serde_json::from_slice(&buf).map_err(|e| exchange(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_tagged_json() {
        assert_eq!(
            serde_json::to_string(&Request::EtcdSnapshot).unwrap(),
            r#"{"command":"etcd-snapshot"}"#
        );
        let e = Response::Error { error: "x".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"error":"x"}}"#
        );
        assert_eq!(
            socket_beside(Path::new("/run/kubeboot/agent.sock")),
            Path::new("/run/kubeboot/control.sock")
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn recover_goes_to_the_loop_and_its_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let req = RecoverRequest {
            confirm_node: Some("master-1".into()),
            from_snapshot: None,
        };
        // Without a loop to hand it to: said so.
        let plain = dir.path().join("plain.sock");
        let _a = serve(&plain, SnapshotSlot::default()).unwrap();
        match ask(&plain, &Request::Recover(req.clone())).await.unwrap() {
            Response::Error { error } => assert!(error.contains("recoveries"), "{error}"),
            other => panic!("{other:?}"),
        }
        // With one: the request arrives whole, the loop's answer returns.
        let path = dir.path().join(SOCKET_NAME);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let _b = serve_with(&path, SnapshotSlot::default(), Some(tx)).unwrap();
        let want = req.clone();
        let lp = tokio::spawn(async move {
            let (got, reply) = rx.recv().await.unwrap();
            assert_eq!(got, want);
            let _ = reply.send(Response::Error {
                error: "refusing to recover: the cluster has a quorum (x)".into(),
            });
        });
        match ask(&path, &Request::Recover(req)).await.unwrap() {
            Response::Error { error } => assert!(error.contains("has a quorum"), "{error}"),
            other => panic!("{other:?}"),
        }
        lp.await.unwrap();
        assert_eq!(
            serde_json::to_string(&Request::Recover(RecoverRequest {
                confirm_node: None,
                from_snapshot: None
            }))
            .unwrap(),
            r#"{"command":"recover","confirm_node":null,"from_snapshot":null}"#
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_node_without_snapshots_says_why_and_bad_requests_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        let _server = serve(&path, SnapshotSlot::default()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        match ask(&path, &Request::EtcdSnapshot).await.unwrap() {
            Response::Error { error } => assert!(error.contains("healthy voter"), "{error}"),
            other => panic!("{other:?}"),
        }
        let mut sock = tokio::net::UnixStream::connect(&path).await.unwrap();
        sock.write_all(b"{\"command\":\"reboot\"}").await.unwrap();
        sock.shutdown().await.unwrap();
        let mut buf = Vec::new();
        sock.read_to_end(&mut buf).await.unwrap();
        let resp: Response = serde_json::from_slice(&buf).unwrap();
        assert!(
            matches!(&resp, Response::Error { error } if error.contains("bad request")),
            "{resp:?}"
        );
        let missing = ask(&dir.path().join("nope.sock"), &Request::EtcdSnapshot)
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("nope.sock"), "{missing}");
    }
}
