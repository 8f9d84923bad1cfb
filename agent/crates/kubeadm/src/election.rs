//! The init election through etcd: exactly one master runs `kubeadm init`.
//!
//! One transaction, atomic in etcd:
//!
//! ```text
//! if create_revision("/kubeboot/kube/init-node") == 0   (the key is absent)
//! then put("/kubeboot/kube/init-node", <own node id>)     → this node won
//! else get("/kubeboot/kube/init-node")                    → the winner's id
//! ```
//!
//! Every contender gets the same answer, whatever the interleaving: etcd
//! serialises the transactions, the first one creates the key and every
//! later one reads it. Asking again is idempotent (the winner reads its own
//! id), so a restarted agent simply asks again. The key has no lease: a
//! winner that restarts in the middle of `kubeadm init` must find itself
//! still the winner, or two masters could initialise (see the README for
//! what happens when the winner never comes back).
//!
//! The init node writes `/kubeboot/kube/init-done` after `kubeadm init`
//! succeeds; the other masters join only once it exists.
//!
//! Takeover of a dead init node: from its first `kubeadm init` attempt
//! until init-done is recorded — across failed attempts and the backoff
//! between them — the winner holds `/kubeboot/kube/init-alive` on an etcd
//! lease that it keeps alive ([`announce_alive`], [`keep_alive`]); it lets
//! go only by dying (the lease expires) or once init is done. A waiting master that has seen no
//! such key for a grace period (its own clock, [`crate::decide::takeover_due`])
//! replaces the winner with one transaction ([`take_over`]):
//!
//! ```text
//! if mod_revision("/kubeboot/kube/init-node") == <the revision it read>
//!    and create_revision("/kubeboot/kube/init-alive") == 0
//!    and create_revision("/kubeboot/kube/init-done") == 0
//! then put("/kubeboot/kube/init-node", <own id>)
//! ```
//!
//! One taker wins (the revision check), never while the winner's lease is
//! live, never after init succeeded. The announce is itself a transaction
//! that requires the init-node key to still name the announcer, so a slow
//! winner that was replaced cannot start `kubeadm init` afterwards. (If a
//! winner loses its lease in the middle of `kubeadm init` — an etcd outage
//! longer than the lease — two inits can overlap; both run against the same
//! etcd with the same derived CAs, so they write the same cluster, never a
//! second one.)

//!
//! Control-plane joins run one at a time: a joining master holds
//! `/kubeboot/kube/join-lock` on a lease for the length of its `kubeadm join
//! --control-plane` ([`take_join_lock`]); the others wait. kubeadm's HA
//! guide joins control-plane nodes in sequence, and under load two joins at
//! once each added a control plane's start-up to the one API server
//! answering them, which then answered slower than kubeadm's 10 s
//! timeouts. The lease ends the lock of a master that dies mid-join.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use thiserror::Error;

/// The election key.
pub const INIT_NODE_KEY: &str = "/kubeboot/kube/init-node";
/// Written by the init node once `kubeadm init` succeeded.
pub const INIT_DONE_KEY: &str = "/kubeboot/kube/init-done";

/// Held by the init node, on a lease, from its first init attempt until
/// init-done is recorded.
pub const INIT_ALIVE_KEY: &str = "/kubeboot/kube/init-alive";

/// Held, on a lease, by the master running `kubeadm join --control-plane`.
pub const JOIN_LOCK_KEY: &str = "/kubeboot/kube/join-lock";

/// The control-plane join lock as one master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinLock {
    /// This master holds it on this lease.
    Held(i64),
    /// Another master (or this one, from before an agent restart, until
    /// that lease expires) holds it.
    Busy {
        /// The holder's node id.
        holder: String,
    },
}

/// Grants a lease of `ttl_s` seconds for `key` (named in the error).
async fn grant_lease(
    client: &mut Client,
    ttl_s: i64,
    key: &'static str,
) -> Result<i64, ElectionError> {
    Ok(client
        .lease_grant(ttl_s, None)
        .await
        .map_err(|source| ElectionError::Etcd {
            op: "lease grant",
            key,
            source,
        })?
        .id())
}

/// Takes the control-plane join lock for `node_id` on a new lease of
/// `ttl_s` seconds, or says who holds it (the new lease is then revoked).
pub async fn take_join_lock(
    client: &mut Client,
    node_id: &str,
    ttl_s: i64,
) -> Result<JoinLock, ElectionError> {
    let lease = grant_lease(client, ttl_s, JOIN_LOCK_KEY).await?;
    let txn = Txn::new()
        .when([Compare::create_revision(JOIN_LOCK_KEY, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            JOIN_LOCK_KEY,
            node_id,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(JOIN_LOCK_KEY, None)]);
    let r = match client.txn(txn).await {
        Ok(r) => r,
        Err(source) => {
            let _ = client.lease_revoke(lease).await;
            return Err(ElectionError::Etcd {
                op: "txn",
                key: JOIN_LOCK_KEY,
                source,
            });
        }
    };
    if r.succeeded() {
        return Ok(JoinLock::Held(lease));
    }
    let _ = client.lease_revoke(lease).await;
    for op in r.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            if let Some(kv) = get.kvs().first() {
                return Ok(JoinLock::Busy {
                    holder: String::from_utf8_lossy(kv.value()).into_owned(),
                });
            }
        }
    }
    // The holder's lease ended between the compare and the read: a
    // transaction rules that out; reported rather than guessed.
    Err(ElectionError::NoValue { key: JOIN_LOCK_KEY })
}

/// Gives the join lock back (the join ended, either way).
pub async fn release_join_lock(client: &mut Client, lease: i64) {
    let _ = client.lease_revoke(lease).await;
}

/// Errors talking to etcd; each names the operation and the key.
#[derive(Debug, Error)]
pub enum ElectionError {
    /// The RPC failed.
    #[error("etcd {op} on {key}: {source}")]
    Etcd {
        /// The operation.
        op: &'static str,
        /// The key.
        key: &'static str,
        /// The client error.
        source: etcd_client::Error,
    },
    /// The transaction failed its compare but returned no value: the key
    /// vanished between the compare and the read, which a transaction rules
    /// out; reported rather than guessed.
    #[error("etcd txn on {key}: the key exists but the transaction returned no value")]
    NoValue {
        /// The key.
        key: &'static str,
    },
}

/// The outcome of the election, as seen by one contender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elected {
    /// The winner's node id.
    pub winner: String,
    /// This contender is the winner.
    pub won: bool,
}

/// Runs the election for `node_id` (idempotent).
pub async fn elect_init_node(client: &mut Client, node_id: &str) -> Result<Elected, ElectionError> {
    put_if_absent(client, INIT_NODE_KEY, node_id)
        .await
        .map(|winner| Elected {
            won: winner == node_id,
            winner,
        })
}

/// Records that `kubeadm init` succeeded on `node_id` (idempotent).
pub async fn mark_init_done(client: &mut Client, node_id: &str) -> Result<(), ElectionError> {
    put_if_absent(client, INIT_DONE_KEY, node_id)
        .await
        .map(|_| ())
}

/// The init node's id once `kubeadm init` has succeeded, else `None`.
pub async fn init_done(client: &mut Client) -> Result<Option<String>, ElectionError> {
    let r = client
        .get(INIT_DONE_KEY, None)
        .await
        .map_err(|source| ElectionError::Etcd {
            op: "get",
            key: INIT_DONE_KEY,
            source,
        })?;
    Ok(r.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// The election key's value and revision (for [`take_over`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitRecord {
    /// The current winner.
    pub winner: String,
    /// The key's `mod_revision`.
    pub mod_revision: i64,
}

/// Reads the election key.
pub async fn read_init(client: &mut Client) -> Result<Option<InitRecord>, ElectionError> {
    let r = client
        .get(INIT_NODE_KEY, None)
        .await
        .map_err(|source| ElectionError::Etcd {
            op: "get",
            key: INIT_NODE_KEY,
            source,
        })?;
    Ok(r.kvs().first().map(|kv| InitRecord {
        winner: String::from_utf8_lossy(kv.value()).into_owned(),
        mod_revision: kv.mod_revision(),
    }))
}

/// Whether the init node's liveness key exists.
pub async fn init_alive(client: &mut Client) -> Result<bool, ElectionError> {
    let r = client
        .get(INIT_ALIVE_KEY, None)
        .await
        .map_err(|source| ElectionError::Etcd {
            op: "get",
            key: INIT_ALIVE_KEY,
            source,
        })?;
    Ok(!r.kvs().is_empty())
}

/// The winner announces that it is alive: grants a lease of `ttl_s`
/// seconds and puts the liveness key on it, only if the election key still
/// names `node_id`. Returns the lease id, or `None` if `node_id` is no
/// longer the winner (the lease is then revoked).
pub async fn announce_alive(
    client: &mut Client,
    node_id: &str,
    ttl_s: i64,
) -> Result<Option<i64>, ElectionError> {
    let lease = grant_lease(client, ttl_s, INIT_ALIVE_KEY).await?;
    let txn = Txn::new()
        .when([Compare::value(INIT_NODE_KEY, CompareOp::Equal, node_id)])
        .and_then([TxnOp::put(
            INIT_ALIVE_KEY,
            node_id,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )]);
    let r = client
        .txn(txn)
        .await
        .map_err(|source| ElectionError::Etcd {
            op: "txn",
            key: INIT_ALIVE_KEY,
            source,
        })?;
    if r.succeeded() {
        Ok(Some(lease))
    } else {
        let _ = client.lease_revoke(lease).await;
        Ok(None)
    }
}

/// Keeps `lease` alive every `period` until the task is aborted (the
/// reconciler dropped its hold: the lease then expires after its TTL) or
/// the lease is gone (expired during an etcd outage longer than its TTL,
/// or revoked). A broken stream or an unreachable etcd is retried every
/// `period`: a transient error must not give up a lease that is still
/// live. Returns once etcd says the lease no longer exists.
pub async fn keep_alive(mut client: Client, lease: i64, period: std::time::Duration) {
    // A stream that stops answering is replaced after this long.
    let answer_within = period.saturating_mul(3);
    loop {
        if let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(answer_within, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    Ok(Ok(Some(_))) => return,
                    _ => break,
                }
                tokio::time::sleep(period).await;
            }
        }
        // Gone, or only unreachable? Only etcd's answer ends the task.
        if let Ok(Ok(r)) =
            tokio::time::timeout(answer_within, client.lease_time_to_live(lease, None)).await
        {
            if r.ttl() <= 0 {
                return;
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Gives up the liveness lease (once init-done is recorded).
pub async fn release_alive(client: &mut Client, lease: i64) {
    let _ = client.lease_revoke(lease).await;
}

/// Replaces a winner that shows no liveness (see the module docs). Returns
/// whether `node_id` is now the winner.
pub async fn take_over(
    client: &mut Client,
    node_id: &str,
    seen: &InitRecord,
) -> Result<bool, ElectionError> {
    let txn = Txn::new()
        .when([
            Compare::mod_revision(INIT_NODE_KEY, CompareOp::Equal, seen.mod_revision),
            Compare::create_revision(INIT_ALIVE_KEY, CompareOp::Equal, 0),
            Compare::create_revision(INIT_DONE_KEY, CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::put(INIT_NODE_KEY, node_id, None)]);
    let r = client
        .txn(txn)
        .await
        .map_err(|source| ElectionError::Etcd {
            op: "txn (take over)",
            key: INIT_NODE_KEY,
            source,
        })?;
    Ok(r.succeeded())
}

/// Creates `key = value` if absent; returns the value the key holds after
/// the transaction (`value` if this call created it).
async fn put_if_absent(
    client: &mut Client,
    key: &'static str,
    value: &str,
) -> Result<String, ElectionError> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value, None)])
        .or_else([TxnOp::get(key, None)]);
    let r = client
        .txn(txn)
        .await
        .map_err(|source| ElectionError::Etcd {
            op: "txn",
            key,
            source,
        })?;
    if r.succeeded() {
        return Ok(value.to_owned());
    }
    for op in r.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            if let Some(kv) = get.kvs().first() {
                return Ok(String::from_utf8_lossy(kv.value()).into_owned());
            }
        }
    }
    Err(ElectionError::NoValue { key })
}
