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

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use thiserror::Error;

/// The election key.
pub const INIT_NODE_KEY: &str = "/kubeboot/kube/init-node";
/// Written by the init node once `kubeadm init` succeeded.
pub const INIT_DONE_KEY: &str = "/kubeboot/kube/init-done";

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
