//! Pods going away: the kubelet's half of graceful deletion (stop within the grace
//! period, then delete the object for good) and the removal of whatever the runtime
//! still holds for a pod that is gone.

use super::{cri_config, labels, volumes, Found, Kubelet, SyncError};
use crate::cri::Cri;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use skiff_cri::v1;

impl<R: Cri> Kubelet<R> {
    /// Stop every container (SIGTERM, SIGKILL after `grace`), then remove the sandboxes.
    pub(super) async fn remove_runtime_objects(
        &self,
        uid: &str,
        (sandboxes, containers): Found,
        grace: Option<i64>,
    ) -> Result<(), SyncError> {
        let stops = containers
            .iter()
            .filter(|c| c.state == v1::ContainerState::ContainerRunning as i32)
            .map(|c| {
                let timeout = grace.unwrap_or_else(|| {
                    c.annotations
                        .get(labels::GRACE_PERIOD)
                        .and_then(|g| g.parse().ok())
                        .unwrap_or(30)
                });
                self.cri.stop_container(v1::StopContainerRequest {
                    container_id: c.id.clone(),
                    timeout,
                })
            });
        for r in futures_util::future::join_all(stops).await {
            match r {
                Err(e) if e.code() != tonic::Code::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        for s in &sandboxes {
            self.cri
                .stop_pod_sandbox(v1::StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await?;
            self.cri
                .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await?;
            self.state.lock().unwrap().ips.remove(&s.id);
        }
        {
            let mut st = self.state.lock().unwrap();
            for c in &containers {
                st.statuses.remove(&c.id);
                st.probes.remove(&c.id);
            }
        }
        volumes::cleanup(&self.cfg.root_dir, uid)?;
        Ok(())
    }

    /// The kubelet's half of graceful deletion: stop within the grace period, then delete
    /// the object for good (grace 0, only this incarnation of the pod).
    pub(super) async fn terminate(&self, pod: &Pod, found: Found) -> Result<(), SyncError> {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| cri_config::grace_seconds(pod));
        let uid = cri_config::pod_uid(pod).to_string();
        self.remove_runtime_objects(&uid, found, Some(grace))
            .await?;
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self
            .api(pod)
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.forget(&uid);
        Ok(())
    }
}
