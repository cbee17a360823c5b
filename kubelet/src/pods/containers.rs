//! A container's way into the runtime: its image per imagePullPolicy (with the pull
//! back-off), its config, create and start, each failure kept as its waiting reason.

use super::{cri_config, sources, volumes, Kubelet, SyncError};
use crate::cri::Cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_apimachinery::trace::Step;
use skiff_cri::v1;
use std::time::SystemTime;

impl<R: Cri> Kubelet<R> {
    /// Start a created container; false (and a waiting reason) if the runtime refused.
    pub(super) async fn start(&self, pod: &Pod, name: &str, id: &str) -> Result<bool, SyncError> {
        let uid = cri_config::pod_uid(pod);
        let t0 = SystemTime::now();
        let r = self
            .cri
            .start_container(v1::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await;
        match r {
            Ok(_) => {
                self.set_waiting(uid, name, None);
                let msg = format!("Started container {name}");
                self.step(pod, name, "Started", msg, Step::since(t0)).await;
                Ok(true)
            }
            Err(e) if e.code() == tonic::Code::Unavailable => Err(e.into()),
            Err(e) => {
                self.fail(pod, name, "RunContainerError", e.message().to_string())
                    .await;
                Ok(true)
            }
        }
    }

    pub(super) async fn create_and_start(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sandbox_id: &str,
        ip: &str,
    ) -> Result<bool, SyncError> {
        if let Err((reason, msg)) = self.ensure_image(pod, c).await? {
            self.fail(pod, &c.name, reason, msg).await;
            return Ok(false);
        }
        let sources = sources::fetch(&self.client, pod).await?;
        let vols = match volumes::prepare(&self.cfg.root_dir, pod, &sources) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("MountVolume.SetUp failed: {e}");
                self.fail(pod, &c.name, "ContainerCreating", msg).await;
                return Ok(false);
            }
        };
        let inputs = cri_config::Inputs {
            restart_count: attempt,
            pod_ip: ip,
            sources: &sources,
            volumes: &vols,
        };
        let config = match cri_config::container_config(&self.cfg, pod, c, &inputs) {
            Ok(cfg) => cfg,
            Err(e) => {
                self.fail(pod, &c.name, "CreateContainerConfigError", e.to_string())
                    .await;
                return Ok(false);
            }
        };
        // A create that failed waits before the next try (the reason stays).
        let key = (
            cri_config::pod_uid(pod).to_string(),
            format!("create:{}", c.name),
        );
        let now = std::time::Instant::now();
        if self.state.lock().unwrap().retry.check(&key, now).is_err() {
            return Ok(false);
        }
        let t0 = SystemTime::now();
        let r = self
            .cri
            .create_container(v1::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(cri_config::sandbox_config(&self.cfg, pod, 0)),
            })
            .await;
        match r {
            Ok(r) => {
                self.state.lock().unwrap().retry.succeeded(&key);
                let name = &c.name;
                let msg = format!("Created container {name}");
                self.step(pod, name, "Created", msg, Step::since(t0)).await;
                self.start(pod, name, &r.container_id).await
            }
            Err(e) if e.code() == tonic::Code::Unavailable => Err(e.into()),
            Err(e) => {
                self.retry_later(key);
                self.fail(
                    pod,
                    &c.name,
                    "CreateContainerError",
                    e.message().to_string(),
                )
                .await;
                Ok(false)
            }
        }
    }

    /// Pull per imagePullPolicy. The inner error is a waiting reason and message.
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<Result<(), (&'static str, String)>, SyncError> {
        let image = c.image.clone().unwrap_or_default();
        let spec = v1::ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let asked = SystemTime::now();
        let present = self
            .cri
            .image_status(v1::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await?
            .image
            .is_some();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = image.rsplit('/').next().is_some_and(|l| l.contains(':'));
            if !tagged || image.ends_with(":latest") {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        match policy.as_str() {
            "Never" if !present => {
                return Ok(Err((
                    "ErrImageNeverPull",
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                )))
            }
            "Never" | "IfNotPresent" if present => {
                let msg = format!("Container image \"{image}\" already present on machine");
                let step = Step::since(asked).with_detail("present");
                self.step(pod, &c.name, "Pulled", msg, step).await;
                return Ok(Ok(()));
            }
            _ => {}
        }
        // After a failed pull the next waits (10 s doubling to 5 min), as the kubelet's
        // image back-off: ImagePullBackOff meanwhile, announced once per wait.
        let key = (
            cri_config::pod_uid(pod).to_string(),
            format!("pull:{}", c.name),
        );
        let waiting = self
            .state
            .lock()
            .unwrap()
            .retry
            .check(&key, std::time::Instant::now());
        if let Err((_, first)) = waiting {
            let msg = format!("Back-off pulling image \"{image}\"");
            if first {
                self.event(pod, &c.name, false, "BackOff", msg.clone())
                    .await;
            }
            return Ok(Err(("ImagePullBackOff", msg)));
        }
        self.event(
            pod,
            &c.name,
            false,
            "Pulling",
            format!("Pulling image \"{image}\""),
        )
        .await;
        let t0 = SystemTime::now();
        let r = self
            .cri
            .pull_image(v1::PullImageRequest {
                image: Some(spec),
                auth: None,
                sandbox_config: None,
            })
            .await;
        match r {
            Ok(_) => {
                self.state.lock().unwrap().retry.succeeded(&key);
                let step = Step::since(t0).with_detail("pulled");
                let msg = format!(
                    "Successfully pulled image \"{image}\" in {:?}",
                    step.duration
                );
                self.step(pod, &c.name, "Pulled", msg, step).await;
                Ok(Ok(()))
            }
            Err(e) if e.code() == tonic::Code::Unavailable => Err(e.into()),
            Err(e) => {
                self.retry_later(key);
                Ok(Err((
                    "ErrImagePull",
                    format!("pull {image}: {}", e.message()),
                )))
            }
        }
    }

    /// A pull or create failed: the next try waits (10 s, doubling to 5 minutes).
    fn retry_later(&self, key: (String, String)) {
        let now = std::time::Instant::now();
        self.state.lock().unwrap().retry.failed(key, now);
    }
}
