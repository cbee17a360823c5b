//! What a user sees of a container's troubles: events on the pod (what `kubectl
//! describe pod` lists) and the waiting reason its status shows.

use super::{cri_config, Kubelet};
use crate::cri::Cri;
use crate::events::Kind;
use k8s_openapi::api::core::v1::Pod;
use skiff_apimachinery::trace::Step;

impl<R: Cri> Kubelet<R> {
    /// An event about one container of the pod (what `kubectl describe pod` lists).
    pub(super) async fn event(
        &self,
        pod: &Pod,
        container: &str,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let kind = if warning { Kind::Warning } else { Kind::Normal };
        self.note(pod, container, kind, reason, message).await
    }

    /// A Normal event that reports a step this kubelet measured (`kubectl skiff trace`).
    pub(super) async fn step(
        &self,
        pod: &Pod,
        container: &str,
        reason: &str,
        message: String,
        step: Step,
    ) {
        self.note(pod, container, Kind::Step(&step, &[]), reason, message)
            .await
    }

    async fn note(
        &self,
        pod: &Pod,
        container: &str,
        kind: Kind<'_>,
        reason: &str,
        message: String,
    ) {
        let init = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .any(|c| c.name == container);
        let field = if init {
            format!("spec.initContainers{{{container}}}")
        } else {
            format!("spec.containers{{{container}}}")
        };
        tracing::info!(
            namespace = pod.metadata.namespace.as_deref().unwrap_or(""),
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            uid = cri_config::pod_uid(pod),
            container,
            reason,
            message = %message,
            "{}",
            if matches!(kind, Kind::Warning) { "warning" } else { "event" }
        );
        crate::events::record_as(
            &self.client,
            &self.cfg.node_name,
            pod,
            Some(field),
            kind,
            reason,
            message,
        )
        .await;
    }

    /// A container that cannot start: its waiting reason, and a Failed event when the
    /// reason is new (retries every second must not flood the events).
    pub(super) async fn fail(&self, pod: &Pod, name: &str, reason: &str, msg: String) {
        let uid = cri_config::pod_uid(pod);
        let known = self
            .state
            .lock()
            .unwrap()
            .waiting
            .get(uid)
            .and_then(|w| w.get(name))
            .is_some_and(|(r, m)| r == reason && *m == msg);
        if !known {
            let (event, text) = match reason {
                "ContainerCreating" => (None, msg.clone()),
                _ => (Some(name), format!("Error: {msg}")),
            };
            let reason = if event.is_some() {
                "Failed"
            } else {
                "FailedMount"
            };
            match event {
                Some(n) => self.event(pod, n, true, reason, text).await,
                // Volumes are the pod's, not a container's.
                None => {
                    crate::events::record(
                        &self.client,
                        &self.cfg.node_name,
                        pod,
                        None,
                        true,
                        reason,
                        text,
                    )
                    .await
                }
            }
        }
        self.set_waiting(uid, name, Some((reason, msg)));
    }
}
