//! A CRI client over the unix socket: what skiffctl and the kubelet dial.

use super::v1::image_service_client::ImageServiceClient;
use super::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why a CRI endpoint could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: no such socket (is `skiff-runtime serve` running?)")]
    NoSocket(PathBuf),
    #[error("connect to {0}: {1}")]
    Connect(PathBuf, tonic::transport::Error),
}

/// `unix:///run/x.sock` or a plain path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// A channel to the socket named by `endpoint`; every request times out after `timeout`.
pub async fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, ClientError> {
    let path = socket_path(endpoint);
    if !path.exists() {
        return Err(ClientError::NoSocket(path));
    }
    let p = path.clone();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .map_err(|e| ClientError::Connect(path, e))
}

/// The runtime and image services, on one socket or two.
#[derive(Clone)]
pub struct Clients {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
}

impl Clients {
    pub async fn connect(
        runtime: &str,
        image: Option<&str>,
        timeout: Duration,
    ) -> Result<Clients, ClientError> {
        let ch = channel(runtime, timeout).await?;
        let img = match image {
            Some(e) if e != runtime => channel(e, timeout).await?,
            _ => ch.clone(),
        };
        Ok(Clients {
            rt: RuntimeServiceClient::new(ch).max_decoding_message_size(64 << 20),
            img: ImageServiceClient::new(img).max_decoding_message_size(64 << 20),
        })
    }
}
