//! The gRPC surface: RuntimeService and ImageService, each call run on a blocking thread
//! against [`Inner`] (runtime operations are system calls and files).

use super::{v1, Inner};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use v1::image_service_server::ImageService;
use v1::runtime_service_server::RuntimeService;

#[derive(Clone)]
pub struct Cri {
    pub inner: Arc<Inner>,
    pub streaming: Arc<super::streaming::Streaming>,
}

type Rsp<T> = Result<Response<T>, Status>;

impl Cri {
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, Status> + Send + 'static,
    ) -> Rsp<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Status::internal(format!("worker failed: {e}")))?
            .map(Response::new)
    }
}

const EXEC_OUTPUT_LIMIT: usize = 16 << 20;

/// One line per state-changing call on a sandbox or container: what, which, and the
/// error if it failed.
fn log<T>(what: &str, id: &str, r: &Rsp<T>) {
    match r {
        Ok(_) => tracing::info!(id, "{what}"),
        Err(e) => tracing::warn!(id, error = e.message(), "{what} failed"),
    }
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _: Request<v1::VersionRequest>) -> Rsp<v1::VersionResponse> {
        Ok(Response::new(v1::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "skiff".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<v1::RunPodSandboxRequest>,
    ) -> Rsp<v1::RunPodSandboxResponse> {
        let req = r.into_inner();
        let meta = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.clone())
            .unwrap_or_default();
        let t0 = std::time::Instant::now();
        let r = self
            .run(move |i| {
                i.run_pod(req)
                    .map(|pod_sandbox_id| v1::RunPodSandboxResponse { pod_sandbox_id })
            })
            .await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match &r {
            Ok(ok) => {
                tracing::info!(namespace = %meta.namespace, pod = %meta.name, uid = %meta.uid, attempt = meta.attempt, sandbox = %ok.get_ref().pod_sandbox_id, ms, "RunPodSandbox")
            }
            Err(e) => {
                tracing::warn!(namespace = %meta.namespace, pod = %meta.name, uid = %meta.uid, ms, error = e.message(), "RunPodSandbox failed")
            }
        }
        r
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<v1::StopPodSandboxRequest>,
    ) -> Rsp<v1::StopPodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        let sandbox = id.clone();
        let r = self
            .run(move |i| i.stop_pod(&id).map(|()| v1::StopPodSandboxResponse {}))
            .await;
        log("StopPodSandbox", &sandbox, &r);
        r
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<v1::RemovePodSandboxRequest>,
    ) -> Rsp<v1::RemovePodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        let sandbox = id.clone();
        let r = self
            .run(move |i| i.remove_pod(&id).map(|()| v1::RemovePodSandboxResponse {}))
            .await;
        log("RemovePodSandbox", &sandbox, &r);
        r
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<v1::PodSandboxStatusRequest>,
    ) -> Rsp<v1::PodSandboxStatusResponse> {
        let req = r.into_inner();
        self.run(move |i| i.pod_status(&req.pod_sandbox_id, req.verbose))
            .await
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<v1::ListPodSandboxRequest>,
    ) -> Rsp<v1::ListPodSandboxResponse> {
        let f = r.into_inner().filter;
        self.run(move |i| {
            Ok(v1::ListPodSandboxResponse {
                items: i.list_pods(f),
            })
        })
        .await
    }

    async fn create_container(
        &self,
        r: Request<v1::CreateContainerRequest>,
    ) -> Rsp<v1::CreateContainerResponse> {
        let req = r.into_inner();
        let sandbox = req.pod_sandbox_id.clone();
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let t0 = std::time::Instant::now();
        let r = self
            .run(move |i| {
                i.create_container(req)
                    .map(|container_id| v1::CreateContainerResponse { container_id })
            })
            .await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match &r {
            Ok(ok) => {
                tracing::info!(%sandbox, container = %name, id = %ok.get_ref().container_id, ms, "CreateContainer")
            }
            Err(e) => {
                tracing::warn!(%sandbox, container = %name, ms, error = e.message(), "CreateContainer failed")
            }
        }
        r
    }

    async fn start_container(
        &self,
        r: Request<v1::StartContainerRequest>,
    ) -> Rsp<v1::StartContainerResponse> {
        let id = r.into_inner().container_id;
        let container = id.clone();
        let r = self
            .run(move |i| {
                i.start_container(&id)
                    .map(|()| v1::StartContainerResponse {})
            })
            .await;
        log("StartContainer", &container, &r);
        r
    }

    async fn stop_container(
        &self,
        r: Request<v1::StopContainerRequest>,
    ) -> Rsp<v1::StopContainerResponse> {
        let req = r.into_inner();
        let container = req.container_id.clone();
        let r = self
            .run(move |i| {
                i.stop_container(&req.container_id, req.timeout)
                    .map(|()| v1::StopContainerResponse {})
            })
            .await;
        log("StopContainer", &container, &r);
        r
    }

    async fn remove_container(
        &self,
        r: Request<v1::RemoveContainerRequest>,
    ) -> Rsp<v1::RemoveContainerResponse> {
        let id = r.into_inner().container_id;
        self.run(move |i| {
            i.remove_container(&id)
                .map(|()| v1::RemoveContainerResponse {})
        })
        .await
    }

    async fn list_containers(
        &self,
        r: Request<v1::ListContainersRequest>,
    ) -> Rsp<v1::ListContainersResponse> {
        let f = r.into_inner().filter;
        self.run(move |i| {
            Ok(v1::ListContainersResponse {
                containers: i.list_containers(f),
            })
        })
        .await
    }

    async fn container_status(
        &self,
        r: Request<v1::ContainerStatusRequest>,
    ) -> Rsp<v1::ContainerStatusResponse> {
        let req = r.into_inner();
        self.run(move |i| i.container_status(&req.container_id, req.verbose))
            .await
    }

    async fn update_container_resources(
        &self,
        r: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Rsp<v1::UpdateContainerResourcesResponse> {
        let req = r.into_inner();
        self.run(move |i| {
            i.update_resources(req)
                .map(|()| v1::UpdateContainerResourcesResponse {})
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        r: Request<v1::ReopenContainerLogRequest>,
    ) -> Rsp<v1::ReopenContainerLogResponse> {
        let id = r.into_inner().container_id;
        self.run(move |i| {
            i.reopen_log(&id)
                .map(|()| v1::ReopenContainerLogResponse {})
        })
        .await
    }

    async fn exec_sync(&self, r: Request<v1::ExecSyncRequest>) -> Rsp<v1::ExecSyncResponse> {
        use std::process::Stdio;
        let req = r.into_inner();
        let pid_file = self
            .inner
            .cfg
            .root
            .join("cri")
            .join(format!("exec-{}.pid", super::records::new_id()));
        let pf = pid_file.clone();
        let (_, cmd) = self
            .run(move |i| i.exec_command(&req.container_id, &req.cmd, Some(&pf), &[]))
            .await?
            .into_inner();
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Status::internal(format!("run exec: {e}")))?;
        let out = child.wait_with_output();
        let res = if req.timeout > 0 {
            tokio::time::timeout(std::time::Duration::from_secs(req.timeout as u64), out).await
        } else {
            Ok(out.await)
        };
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let _ = std::fs::remove_file(&pid_file);
        match res {
            Err(_) => {
                if let Some(p) = pid {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Err(Status::deadline_exceeded(format!(
                    "command timed out after {}s",
                    req.timeout
                )))
            }
            Ok(Err(e)) => Err(Status::internal(format!("exec: {e}"))),
            Ok(Ok(o)) => {
                let mut stdout = o.stdout;
                let mut stderr = o.stderr;
                stdout.truncate(EXEC_OUTPUT_LIMIT);
                stderr.truncate(EXEC_OUTPUT_LIMIT);
                // The CLI exits 1 with its own message when the exec could not start.
                let code = o.status.code().unwrap_or(255);
                if pid.is_none() {
                    return Err(Status::unknown(format!(
                        "exec failed: {}",
                        String::from_utf8_lossy(&stderr).trim()
                    )));
                }
                Ok(Response::new(v1::ExecSyncResponse {
                    stdout,
                    stderr,
                    exit_code: code,
                }))
            }
        }
    }

    async fn exec(&self, r: Request<v1::ExecRequest>) -> Rsp<v1::ExecResponse> {
        let req = r.into_inner();
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is required"));
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout or stderr must be set",
            ));
        }
        if req.tty && req.stderr {
            return Err(Status::invalid_argument(
                "tty and stderr cannot both be set (a terminal has one output)",
            ));
        }
        let id = req.container_id.clone();
        let (container, _) = self
            .run(move |i| i.running_container(&id))
            .await?
            .into_inner();
        let url = self.streaming.url(super::streaming::Session::Exec {
            container,
            cmd: req.cmd,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        });
        Ok(Response::new(v1::ExecResponse { url }))
    }

    async fn attach(&self, r: Request<v1::AttachRequest>) -> Rsp<v1::AttachResponse> {
        let req = r.into_inner();
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout or stderr must be set",
            ));
        }
        let id = req.container_id.clone();
        let (container, dir) = self
            .run(move |i| i.running_container(&id))
            .await?
            .into_inner();
        let url = self.streaming.url(super::streaming::Session::Attach {
            container,
            dir,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        });
        Ok(Response::new(v1::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        r: Request<v1::PortForwardRequest>,
    ) -> Rsp<v1::PortForwardResponse> {
        let req = r.into_inner();
        let ports = req
            .port
            .iter()
            .map(|p| {
                u16::try_from(*p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| Status::invalid_argument(format!("invalid port {p}")))
            })
            .collect::<Result<Vec<u16>, Status>>()?;
        let id = req.pod_sandbox_id.clone();
        let netns = self.run(move |i| i.pod_netns(&id)).await?.into_inner();
        let url = self
            .streaming
            .url(super::streaming::Session::PortForward { netns, ports });
        Ok(Response::new(v1::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        r: Request<v1::ContainerStatsRequest>,
    ) -> Rsp<v1::ContainerStatsResponse> {
        let id = r.into_inner().container_id;
        self.run(move |i| {
            i.container_stats(&id)
                .map(|s| v1::ContainerStatsResponse { stats: Some(s) })
        })
        .await
    }

    async fn list_container_stats(
        &self,
        r: Request<v1::ListContainerStatsRequest>,
    ) -> Rsp<v1::ListContainerStatsResponse> {
        let f = r.into_inner().filter;
        self.run(move |i| {
            Ok(v1::ListContainerStatsResponse {
                stats: i.list_container_stats(f),
            })
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<v1::PodSandboxStatsRequest>,
    ) -> Rsp<v1::PodSandboxStatsResponse> {
        let id = r.into_inner().pod_sandbox_id;
        self.run(move |i| {
            i.pod_stats(&id)
                .map(|s| v1::PodSandboxStatsResponse { stats: Some(s) })
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Rsp<v1::ListPodSandboxStatsResponse> {
        let f = r.into_inner().filter.unwrap_or_default();
        self.run(move |i| {
            let pods = i.list_pods(Some(v1::PodSandboxFilter {
                id: f.id,
                state: None,
                label_selector: f.label_selector,
            }));
            Ok(v1::ListPodSandboxStatsResponse {
                stats: pods
                    .iter()
                    .filter_map(|p| i.pod_stats(&p.id).ok())
                    .collect(),
            })
        })
        .await
    }

    async fn update_runtime_config(
        &self,
        r: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Rsp<v1::UpdateRuntimeConfigResponse> {
        // The pod CIDR fills a CNI configuration's `"subnet": "usePodCidr"`.
        let cidr = r
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.run(move |i| {
            if !cidr.is_empty() {
                i.set_pod_cidr(&cidr).map_err(super::status)?;
            }
            Ok(v1::UpdateRuntimeConfigResponse {})
        })
        .await
    }

    async fn status(&self, r: Request<v1::StatusRequest>) -> Rsp<v1::StatusResponse> {
        let verbose = r.into_inner().verbose;
        self.run(move |i| {
            let net = i.cni_network();
            let mut info = std::collections::HashMap::new();
            if verbose {
                info.insert(
                    "config".into(),
                    serde_json::json!({
                        "root": i.cfg.root, "imageDir": i.cfg.image_dir,
                        "cniConfDir": i.cfg.cni_conf_dir, "cniBinDir": i.cfg.cni_bin_dir,
                        "cgroupVersion": format!("{:?}", crate::cgroups::detect()),
                        "network": net.as_ref().map(|(p, c)| serde_json::json!({"plugin": p, "config": c})).ok(),
                    })
                    .to_string(),
                );
            }
            let (ok, msg) = match &net {
                Ok(_) => (true, String::new()),
                Err(e) => (false, e.clone()),
            };
            Ok(v1::StatusResponse {
                status: Some(v1::RuntimeStatus {
                    conditions: vec![
                        v1::RuntimeCondition {
                            r#type: "RuntimeReady".into(),
                            status: true,
                            reason: String::new(),
                            message: String::new(),
                        },
                        v1::RuntimeCondition {
                            r#type: "NetworkReady".into(),
                            status: ok,
                            reason: if ok { String::new() } else { "NetworkPluginNotReady".into() },
                            message: msg,
                        },
                    ],
                }),
                info,
                runtime_handlers: vec![v1::RuntimeHandler {
                    name: String::new(),
                    features: Some(v1::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: false,
                        user_namespaces: false,
                    }),
                }],
                features: Some(v1::RuntimeFeatures {
                    supplemental_groups_policy: false,
                }),
            })
        })
        .await
    }

    async fn checkpoint_container(
        &self,
        _: Request<v1::CheckpointContainerRequest>,
    ) -> Rsp<v1::CheckpointContainerResponse> {
        Err(Status::unimplemented("checkpointing is not supported"))
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<v1::ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _: Request<v1::GetEventsRequest>,
    ) -> Rsp<Self::GetContainerEventsStream> {
        use tokio_stream::StreamExt;
        // A listener that falls more than the buffer behind skips what it missed.
        let s = tokio_stream::wrappers::BroadcastStream::new(self.inner.events.subscribe())
            .filter_map(|e| e.ok().map(Ok));
        Ok(Response::new(Box::pin(s)))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Rsp<v1::ListMetricDescriptorsResponse> {
        Ok(Response::new(v1::ListMetricDescriptorsResponse::default()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Rsp<v1::ListPodSandboxMetricsResponse> {
        Ok(Response::new(v1::ListPodSandboxMetricsResponse::default()))
    }

    async fn runtime_config(
        &self,
        _: Request<v1::RuntimeConfigRequest>,
    ) -> Rsp<v1::RuntimeConfigResponse> {
        Ok(Response::new(v1::RuntimeConfigResponse {
            linux: Some(v1::LinuxRuntimeConfiguration {
                cgroup_driver: v1::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(&self, r: Request<v1::ListImagesRequest>) -> Rsp<v1::ListImagesResponse> {
        let f = r.into_inner().filter;
        self.run(move |i| {
            i.list_images(f)
                .map(|images| v1::ListImagesResponse { images })
        })
        .await
    }

    async fn image_status(
        &self,
        r: Request<v1::ImageStatusRequest>,
    ) -> Rsp<v1::ImageStatusResponse> {
        let req = r.into_inner();
        let name = req.image.map(|i| i.image).unwrap_or_default();
        self.run(move |i| i.image_status(&name, req.verbose)).await
    }

    async fn pull_image(&self, r: Request<v1::PullImageRequest>) -> Rsp<v1::PullImageResponse> {
        let req = r.into_inner();
        let image = req
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let t0 = std::time::Instant::now();
        let r = self
            .run(move |i| {
                i.pull_image(req)
                    .map(|image_ref| v1::PullImageResponse { image_ref })
            })
            .await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match &r {
            Ok(ok) => tracing::info!(%image, image_ref = %ok.get_ref().image_ref, ms, "PullImage"),
            Err(e) => tracing::warn!(%image, ms, error = e.message(), "PullImage failed"),
        }
        r
    }

    async fn remove_image(
        &self,
        r: Request<v1::RemoveImageRequest>,
    ) -> Rsp<v1::RemoveImageResponse> {
        let name = r.into_inner().image.map(|i| i.image).unwrap_or_default();
        self.run(move |i| i.remove_image(&name).map(|()| v1::RemoveImageResponse {}))
            .await
    }

    async fn image_fs_info(
        &self,
        _: Request<v1::ImageFsInfoRequest>,
    ) -> Rsp<v1::ImageFsInfoResponse> {
        self.run(|i| Ok(i.image_fs_info())).await
    }
}
