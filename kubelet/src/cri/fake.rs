//! An in-process container runtime for tests: the CRI calls the kubelet makes, answered
//! from memory with the CRI's semantics (ids, attempts, states and their timestamps,
//! idempotent stops and removes, NotFound for what is gone), plus the levers a test
//! pulls to make things happen: a container exits, a sandbox dies, a pull fails, an
//! exec probe fails, the runtime goes away. Every call is logged for assertions.

use super::Cri;
use skiff_cri::v1;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tonic::Status;

#[derive(Clone, Default)]
pub struct FakeRuntime(Arc<Mutex<World>>);

#[derive(Default)]
pub struct World {
    next: u64,
    sandboxes: BTreeMap<String, (v1::PodSandbox, String)>,
    containers: BTreeMap<String, (v1::Container, v1::ContainerStatus)>,
    images: HashSet<String>,
    /// Pulls of these fail.
    pub unpullable: HashSet<String>,
    /// Exit code of ExecSync, by container name (0 when absent).
    pub exec_exit: HashMap<String, i32>,
    /// Every call is refused as if the socket were gone.
    pub down: bool,
    /// "Method name" per call, in order.
    pub calls: Vec<String>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn matches(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl FakeRuntime {
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    /// Log a call; Err while the runtime is down.
    fn call(&self, name: &str) -> Result<std::sync::MutexGuard<'_, World>, Status> {
        let mut w = self.world();
        if w.down {
            return Err(Status::unavailable("connection refused"));
        }
        w.calls.push(name.to_string());
        Ok(w)
    }

    /// The newest run of container `name` exits with `code`.
    pub fn exit(&self, name: &str, code: i32) {
        let mut w = self.world();
        let id = w.newest(name).expect("no such container");
        let (c, s) = w.containers.get_mut(&id).unwrap();
        assert_eq!(
            c.state,
            v1::ContainerState::ContainerRunning as i32,
            "{name}"
        );
        c.state = v1::ContainerState::ContainerExited as i32;
        s.state = c.state;
        s.exit_code = code;
        s.finished_at = now();
    }

    /// Every sandbox dies (its network namespace is gone); containers die with it.
    pub fn lose_sandboxes(&self) {
        let mut w = self.world();
        let ids: Vec<String> = w.sandboxes.keys().cloned().collect();
        for id in ids {
            w.stop_sandbox(&id, 137);
        }
    }
}

impl World {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn newest(&self, name: &str) -> Option<String> {
        self.containers
            .values()
            .filter(|(_, s)| s.metadata.as_ref().is_some_and(|m| m.name == name))
            .max_by_key(|(_, s)| s.created_at)
            .map(|(c, _)| c.id.clone())
    }

    fn stop_container(&mut self, id: &str, code: i32) {
        if let Some((c, s)) = self.containers.get_mut(id) {
            if c.state != v1::ContainerState::ContainerExited as i32 {
                c.state = v1::ContainerState::ContainerExited as i32;
                s.state = c.state;
                s.exit_code = code;
                s.finished_at = now();
            }
        }
    }

    fn stop_sandbox(&mut self, id: &str, code: i32) {
        if let Some((s, _)) = self.sandboxes.get_mut(id) {
            s.state = v1::PodSandboxState::SandboxNotready as i32;
        }
        let inside: Vec<String> = self
            .containers
            .values()
            .filter(|(c, _)| c.pod_sandbox_id == id)
            .map(|(c, _)| c.id.clone())
            .collect();
        for c in inside {
            self.stop_container(&c, code);
        }
    }

    /// Containers of the sandbox `id` or not, running or not.
    pub fn containers_in(&self, sandbox: &str) -> Vec<(String, u32, i32)> {
        self.containers
            .values()
            .filter(|(c, _)| c.pod_sandbox_id == sandbox)
            .map(|(c, s)| {
                let m = s.metadata.clone().unwrap_or_default();
                (m.name, m.attempt, c.state)
            })
            .collect()
    }

    /// Sandbox ids with their attempt and whether they are ready.
    pub fn sandboxes(&self) -> Vec<(String, u32, bool)> {
        self.sandboxes
            .values()
            .map(|(s, _)| {
                (
                    s.id.clone(),
                    s.metadata.as_ref().map_or(0, |m| m.attempt),
                    s.state == v1::PodSandboxState::SandboxReady as i32,
                )
            })
            .collect()
    }
}

impl Cri for FakeRuntime {
    async fn list_pod_sandbox(
        &self,
        req: v1::ListPodSandboxRequest,
    ) -> Result<v1::ListPodSandboxResponse, Status> {
        let w = self.call("ListPodSandbox")?;
        let sel = req.filter.map(|f| f.label_selector).unwrap_or_default();
        let items = w
            .sandboxes
            .values()
            .filter(|(s, _)| matches(&s.labels, &sel))
            .map(|(s, _)| s.clone())
            .collect();
        Ok(v1::ListPodSandboxResponse { items })
    }

    async fn pod_sandbox_status(
        &self,
        req: v1::PodSandboxStatusRequest,
    ) -> Result<v1::PodSandboxStatusResponse, Status> {
        let w = self.call("PodSandboxStatus")?;
        let (s, ip) = w
            .sandboxes
            .get(&req.pod_sandbox_id)
            .ok_or_else(|| Status::not_found("no such sandbox"))?;
        Ok(v1::PodSandboxStatusResponse {
            status: Some(v1::PodSandboxStatus {
                id: s.id.clone(),
                metadata: s.metadata.clone(),
                state: s.state,
                created_at: s.created_at,
                network: Some(v1::PodSandboxNetworkStatus {
                    ip: ip.clone(),
                    ..Default::default()
                }),
                labels: s.labels.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn run_pod_sandbox(
        &self,
        req: v1::RunPodSandboxRequest,
    ) -> Result<v1::RunPodSandboxResponse, Status> {
        let mut w = self.call("RunPodSandbox")?;
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("no config"))?;
        let id = w.id("sb");
        let ip = format!("10.88.0.{}", w.next);
        let s = v1::PodSandbox {
            id: id.clone(),
            metadata: config.metadata,
            state: v1::PodSandboxState::SandboxReady as i32,
            created_at: now(),
            labels: config.labels,
            annotations: config.annotations,
            ..Default::default()
        };
        w.sandboxes.insert(id.clone(), (s, ip));
        Ok(v1::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(
        &self,
        req: v1::StopPodSandboxRequest,
    ) -> Result<v1::StopPodSandboxResponse, Status> {
        let mut w = self.call("StopPodSandbox")?;
        w.stop_sandbox(&req.pod_sandbox_id, 137);
        Ok(v1::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        req: v1::RemovePodSandboxRequest,
    ) -> Result<v1::RemovePodSandboxResponse, Status> {
        let mut w = self.call("RemovePodSandbox")?;
        let id = req.pod_sandbox_id;
        if w.sandboxes
            .get(&id)
            .is_some_and(|(s, _)| s.state == v1::PodSandboxState::SandboxReady as i32)
        {
            return Err(Status::failed_precondition("sandbox is running"));
        }
        w.sandboxes.remove(&id);
        w.containers.retain(|_, (c, _)| c.pod_sandbox_id != id);
        Ok(v1::RemovePodSandboxResponse {})
    }

    async fn list_containers(
        &self,
        req: v1::ListContainersRequest,
    ) -> Result<v1::ListContainersResponse, Status> {
        let w = self.call("ListContainers")?;
        let f = req.filter.unwrap_or_default();
        let containers = w
            .containers
            .values()
            .map(|(c, _)| c)
            .filter(|c| matches(&c.labels, &f.label_selector))
            .filter(|c| f.state.as_ref().is_none_or(|s| s.state == c.state))
            .cloned()
            .collect();
        Ok(v1::ListContainersResponse { containers })
    }

    async fn container_status(
        &self,
        req: v1::ContainerStatusRequest,
    ) -> Result<v1::ContainerStatusResponse, Status> {
        let w = self.call("ContainerStatus")?;
        let (_, s) = w
            .containers
            .get(&req.container_id)
            .ok_or_else(|| Status::not_found("no such container"))?;
        Ok(v1::ContainerStatusResponse {
            status: Some(s.clone()),
            ..Default::default()
        })
    }

    async fn create_container(
        &self,
        req: v1::CreateContainerRequest,
    ) -> Result<v1::CreateContainerResponse, Status> {
        let mut w = self.call("CreateContainer")?;
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("no config"))?;
        let ready = w
            .sandboxes
            .get(&req.pod_sandbox_id)
            .is_some_and(|(s, _)| s.state == v1::PodSandboxState::SandboxReady as i32);
        if !ready {
            return Err(Status::failed_precondition("sandbox is not ready"));
        }
        let image = config.image.clone().unwrap_or_default().image;
        if !w.images.contains(&image) {
            return Err(Status::not_found(format!("image {image} is not present")));
        }
        let id = w.id("c");
        let created_at = now();
        let c = v1::Container {
            id: id.clone(),
            pod_sandbox_id: req.pod_sandbox_id,
            metadata: config.metadata.clone(),
            image: config.image.clone(),
            image_ref: image.clone(),
            state: v1::ContainerState::ContainerCreated as i32,
            created_at,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            ..Default::default()
        };
        let s = v1::ContainerStatus {
            id: id.clone(),
            metadata: config.metadata,
            state: c.state,
            created_at,
            image: config.image,
            image_ref: image,
            labels: config.labels,
            annotations: config.annotations,
            ..Default::default()
        };
        w.containers.insert(id.clone(), (c, s));
        Ok(v1::CreateContainerResponse { container_id: id })
    }

    async fn start_container(
        &self,
        req: v1::StartContainerRequest,
    ) -> Result<v1::StartContainerResponse, Status> {
        let mut w = self.call("StartContainer")?;
        let (c, s) = w
            .containers
            .get_mut(&req.container_id)
            .ok_or_else(|| Status::not_found("no such container"))?;
        if c.state != v1::ContainerState::ContainerCreated as i32 {
            return Err(Status::failed_precondition(
                "container is not in created state",
            ));
        }
        c.state = v1::ContainerState::ContainerRunning as i32;
        s.state = c.state;
        s.started_at = now();
        Ok(v1::StartContainerResponse {})
    }

    async fn stop_container(
        &self,
        req: v1::StopContainerRequest,
    ) -> Result<v1::StopContainerResponse, Status> {
        let mut w = self.call("StopContainer")?;
        if !w.containers.contains_key(&req.container_id) {
            return Err(Status::not_found("no such container"));
        }
        // SIGTERM obeyed at once.
        w.stop_container(&req.container_id, 143);
        Ok(v1::StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        req: v1::RemoveContainerRequest,
    ) -> Result<v1::RemoveContainerResponse, Status> {
        let mut w = self.call("RemoveContainer")?;
        w.containers.remove(&req.container_id);
        Ok(v1::RemoveContainerResponse {})
    }

    async fn exec_sync(&self, req: v1::ExecSyncRequest) -> Result<v1::ExecSyncResponse, Status> {
        let w = self.call("ExecSync")?;
        let (c, s) = w
            .containers
            .get(&req.container_id)
            .ok_or_else(|| Status::not_found("no such container"))?;
        if c.state != v1::ContainerState::ContainerRunning as i32 {
            return Err(Status::failed_precondition("container is not running"));
        }
        let name = s.metadata.as_ref().map_or("", |m| m.name.as_str());
        Ok(v1::ExecSyncResponse {
            exit_code: w.exec_exit.get(name).copied().unwrap_or(0),
            ..Default::default()
        })
    }

    async fn image_status(
        &self,
        req: v1::ImageStatusRequest,
    ) -> Result<v1::ImageStatusResponse, Status> {
        let w = self.call("ImageStatus")?;
        let name = req.image.unwrap_or_default().image;
        Ok(v1::ImageStatusResponse {
            image: w.images.contains(&name).then(|| v1::Image {
                id: format!("sha256:{name}"),
                repo_tags: vec![name],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn pull_image(&self, req: v1::PullImageRequest) -> Result<v1::PullImageResponse, Status> {
        let mut w = self.call("PullImage")?;
        let name = req.image.unwrap_or_default().image;
        if w.unpullable.contains(&name) {
            return Err(Status::not_found(format!("{name}: manifest unknown")));
        }
        w.images.insert(name.clone());
        Ok(v1::PullImageResponse {
            image_ref: format!("sha256:{name}"),
        })
    }
}
