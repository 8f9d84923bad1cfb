//! The agent's local Unix sockets (the status socket, the control socket):
//! binding over a stale socket, connecting, and their one error type.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};

/// Errors serving or using one of the agent's sockets.
#[derive(Debug, Error)]
pub enum SocketError {
    /// Binding the socket failed.
    #[error("binding the {socket} socket {path}: {source}")]
    Bind {
        /// Which socket (`status`, `control`).
        socket: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Connecting to the agent failed (is it running?).
    #[error("connecting to the agent at {path} (is it running?): {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The exchange failed or the answer did not parse.
    #[error("{doing} {path}: {reason}")]
    Exchange {
        /// What the client was doing (`reading the status from`, ...).
        doing: &'static str,
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Binds `path` (creating its directory, replacing a stale socket) and,
/// with `mode`, sets its permissions.
pub fn bind(
    socket: &'static str,
    path: &Path,
    mode: Option<u32>,
) -> Result<UnixListener, SocketError> {
    let err = |source| SocketError::Bind {
        socket,
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(listener)
}

/// Connects to the agent's socket at `path`.
pub async fn connect(path: &Path) -> Result<UnixStream, SocketError> {
    UnixStream::connect(path)
        .await
        .map_err(|source| SocketError::Connect {
            path: path.to_owned(),
            source,
        })
}
