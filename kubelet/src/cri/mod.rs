//! What the kubelet asks of a container runtime: the CRI calls it makes, as a trait, so
//! the pod sync runs against the real runtime over its socket ([`Clients`]) or against an
//! in-process fake in tests (`fake`). Requests and answers are the CRI's own messages.

#[cfg(test)]
pub mod fake;

use skiff_cri::client::Clients;
use skiff_cri::v1;
use std::future::Future;
use tonic::Status;

macro_rules! calls {
    ($($(#[$doc:meta])* $name:ident($req:ty) -> $resp:ty, $svc:ident;)*) => {
        /// The CRI RuntimeService and ImageService calls the pod sync makes.
        pub trait Cri: Clone + Send + Sync + 'static {
            $($(#[$doc])* fn $name(&self, req: $req) -> impl Future<Output = Result<$resp, Status>> + Send;)*
        }

        impl Cri for Clients {
            $(async fn $name(&self, req: $req) -> Result<$resp, Status> {
                self.$svc.clone().$name(req).await.map(tonic::Response::into_inner)
            })*
        }
    };
}

calls! {
    list_pod_sandbox(v1::ListPodSandboxRequest) -> v1::ListPodSandboxResponse, rt;
    pod_sandbox_status(v1::PodSandboxStatusRequest) -> v1::PodSandboxStatusResponse, rt;
    run_pod_sandbox(v1::RunPodSandboxRequest) -> v1::RunPodSandboxResponse, rt;
    stop_pod_sandbox(v1::StopPodSandboxRequest) -> v1::StopPodSandboxResponse, rt;
    remove_pod_sandbox(v1::RemovePodSandboxRequest) -> v1::RemovePodSandboxResponse, rt;
    list_containers(v1::ListContainersRequest) -> v1::ListContainersResponse, rt;
    container_status(v1::ContainerStatusRequest) -> v1::ContainerStatusResponse, rt;
    create_container(v1::CreateContainerRequest) -> v1::CreateContainerResponse, rt;
    start_container(v1::StartContainerRequest) -> v1::StartContainerResponse, rt;
    stop_container(v1::StopContainerRequest) -> v1::StopContainerResponse, rt;
    remove_container(v1::RemoveContainerRequest) -> v1::RemoveContainerResponse, rt;
    exec_sync(v1::ExecSyncRequest) -> v1::ExecSyncResponse, rt;
    image_status(v1::ImageStatusRequest) -> v1::ImageStatusResponse, img;
    pull_image(v1::PullImageRequest) -> v1::PullImageResponse, img;
}
