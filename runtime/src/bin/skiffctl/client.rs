//! gRPC clients over a unix socket.

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use skiff_runtime::cri::v1::image_service_client::ImageServiceClient;
use skiff_runtime::cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// `unix:///run/x.sock` or a plain path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

pub async fn channel(endpoint: &str, timeout: Duration) -> Result<Channel> {
    let path = socket_path(endpoint);
    if !path.exists() {
        anyhow::bail!(
            "cannot connect to {}: no such socket (is `skiff-runtime serve` running?)",
            path.display()
        );
    }
    let p = path.clone();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::try_from("http://[::1]:50051")?
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .with_context(|| format!("connect to {}", path.display()))
}

pub struct Clients {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
}

impl Clients {
    pub async fn connect(runtime: &str, image: Option<&str>, timeout: Duration) -> Result<Clients> {
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
