//! The few fields of an object a controller pass reads from every object it looks at.
//! Decoding only these (serde skips the rest without building it) keeps a pass over
//! thousands of nodes or pods cheap; an object is decoded whole only to be changed.

use crate::store::KeyValue;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct View {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: Spec,
}

#[derive(Deserialize, Default)]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(rename = "creationTimestamp")]
    pub created: Option<String>,
    #[serde(rename = "deletionTimestamp")]
    pub deleted: Option<String>,
}

/// Spec fields of the kinds read this way (nodes, pods, leases).
#[derive(Deserialize, Default)]
pub struct Spec {
    /// Lease.
    #[serde(rename = "renewTime")]
    pub renew_time: Option<String>,
    /// Node.
    #[serde(default)]
    pub taints: Vec<Taint>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// Pod.
    #[serde(rename = "nodeName")]
    pub node_name: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct Taint {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub effect: String,
}

/// The view of a stored object (None if it is not a JSON object of that shape).
pub fn of(kv: &KeyValue) -> Option<View> {
    serde_json::from_slice(&kv.value).ok()
}
