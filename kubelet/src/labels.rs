//! The labels and annotations the kubelet puts on CRI sandboxes and containers, named as
//! Kubernetes' kubelet names them, so crictl users see the usual keys and a restarted
//! kubelet can tell whose containers are whose.

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Annotation: the container's restart count (also its CRI attempt).
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Annotation: the pod's termination grace period, for stopping orphans whose pod is gone.
pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
