#![doc = include_str!("../README.md")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as api;
use tonic::transport::{Channel, Endpoint, Uri};

pub mod check;

/// containerd's socket (its CRI plugin serves the same socket).
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// What went wrong talking to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket could not be connected.
    #[error("connecting to the CRI socket {}: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: tonic::transport::Error,
    },
    /// A CRI call failed.
    #[error("CRI {call}: {status}")]
    Call {
        /// The RPC.
        call: &'static str,
        /// The runtime's answer.
        status: Box<tonic::Status>,
    },
    /// The runtime answered without a field the call needs.
    #[error("CRI {call}: the answer has no {field}")]
    Missing {
        /// The RPC.
        call: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A condition did not hold in time.
    #[error("timed out after {}s waiting for {what}", waited.as_secs())]
    Timeout {
        /// What was awaited, with the last state seen.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// The check found the node unable to do what it must.
    #[error("check failed: {0}")]
    Failed(String),
    /// A local file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn call(name: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |status| CriError::Call {
        call: name,
        status: Box::new(status),
    }
}

/// A connected CRI client (runtime and image services on one channel).
#[derive(Clone)]
pub struct Client {
    runtime: api::runtime_service_client::RuntimeServiceClient<Channel>,
    images: api::image_service_client::ImageServiceClient<Channel>,
}

impl Client {
    /// Connects to the CRI server on the Unix socket `socket`.
    pub async fn connect(socket: &Path) -> Result<Client, CriError> {
        let path = socket.to_owned();
        // The URI is required by the API and ignored by the connector.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| CriError::Connect {
                socket: socket.to_owned(),
                source,
            })?;
        Ok(Client {
            runtime: api::runtime_service_client::RuntimeServiceClient::new(channel.clone()),
            images: api::image_service_client::ImageServiceClient::new(channel),
        })
    }

    /// The runtime's name and version (`Version`).
    pub async fn version(&mut self) -> Result<api::VersionResponse, CriError> {
        Ok(self
            .runtime
            .version(api::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(call("Version"))?
            .into_inner())
    }

    /// The runtime's conditions (`Status`): (type, ready, reason: message).
    pub async fn conditions(&mut self) -> Result<Vec<(String, bool, String)>, CriError> {
        let status = self
            .runtime
            .status(api::StatusRequest { verbose: false })
            .await
            .map_err(call("Status"))?
            .into_inner();
        Ok(status
            .status
            .map(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.r#type, c.status, format!("{}: {}", c.reason, c.message)))
            .collect())
    }

    /// Waits until the runtime reports both `RuntimeReady` and
    /// `NetworkReady` (a CNI configuration is loaded).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), CriError> {
        let start = tokio::time::Instant::now();
        loop {
            let conds = self.conditions().await?;
            let ready = |t: &str| conds.iter().any(|(ty, ok, _)| ty == t && *ok);
            if ready("RuntimeReady") && ready("NetworkReady") {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(CriError::Timeout {
                    what: format!("RuntimeReady and NetworkReady (conditions: {conds:?})"),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the runtime has `image` (`ImageStatus`).
    pub async fn has_image(&mut self, image: &str) -> Result<bool, CriError> {
        let status = self
            .images
            .image_status(api::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await
            .map_err(call("ImageStatus"))?
            .into_inner();
        Ok(status.image.is_some())
    }

    /// Runs a pod sandbox (`RunPodSandbox`); returns its id.
    pub async fn run_pod(&mut self, config: &api::PodSandboxConfig) -> Result<String, CriError> {
        Ok(self
            .runtime
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(call("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// The pod's IP address (`PodSandboxStatus`).
    pub async fn pod_ip(&mut self, pod: &str) -> Result<String, CriError> {
        let status = self
            .runtime
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: false,
            })
            .await
            .map_err(call("PodSandboxStatus"))?
            .into_inner();
        status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .ok_or(CriError::Missing {
                call: "PodSandboxStatus",
                field: "network.ip",
            })
    }

    /// Creates and starts a container in `pod` (`CreateContainer`,
    /// `StartContainer`); returns its id.
    pub async fn start_container(
        &mut self,
        pod: &str,
        pod_config: &api::PodSandboxConfig,
        config: &api::ContainerConfig,
    ) -> Result<String, CriError> {
        let id = self
            .runtime
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config.clone()),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map_err(call("CreateContainer"))?
            .into_inner()
            .container_id;
        self.runtime
            .start_container(api::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(call("StartContainer"))?;
        Ok(id)
    }

    /// The container's status (`ContainerStatus`).
    pub async fn container_status(&mut self, id: &str) -> Result<api::ContainerStatus, CriError> {
        self.runtime
            .container_status(api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(call("ContainerStatus"))?
            .into_inner()
            .status
            .ok_or(CriError::Missing {
                call: "ContainerStatus",
                field: "status",
            })
    }

    /// Waits until the container has exited; returns its status.
    pub async fn wait_exited(
        &mut self,
        id: &str,
        timeout: Duration,
    ) -> Result<api::ContainerStatus, CriError> {
        let start = tokio::time::Instant::now();
        loop {
            let status = self.container_status(id).await?;
            if status.state == api::ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                return Err(CriError::Timeout {
                    what: format!(
                        "container {id} to exit (state {}, reason {:?})",
                        status.state, status.reason
                    ),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops and removes a pod and its containers (`StopPodSandbox`,
    /// `RemovePodSandbox`).
    pub async fn remove_pod(&mut self, pod: &str) -> Result<(), CriError> {
        self.runtime
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .map_err(call("StopPodSandbox"))?;
        self.runtime
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .map_err(call("RemovePodSandbox"))?;
        Ok(())
    }
}

/// An image reference as the CRI wants it.
pub fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}
