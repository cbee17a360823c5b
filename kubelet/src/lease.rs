//! The node heartbeat: a Lease `kube-node-lease/<node>` renewed every few seconds. The
//! node-lifecycle controller marks the node NotReady when renewals stop.

use crate::Config;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};

pub const NAMESPACE: &str = "kube-node-lease";

/// Renew (or create) the node's Lease once.
pub async fn renew(api: &Api<Lease>, cfg: &Config, node_uid: &str) -> Result<(), kube::Error> {
    let spec = LeaseSpec {
        holder_identity: Some(cfg.node_name.clone()),
        lease_duration_seconds: Some(cfg.lease_duration_seconds),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..Default::default()
    };
    let patch = serde_json::json!({ "spec": spec });
    match api
        .patch(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.node_name.clone()),
                    namespace: Some(NAMESPACE.into()),
                    // Deleting the Node deletes its Lease (garbage collection).
                    owner_references: (!node_uid.is_empty()).then(|| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: cfg.node_name.clone(),
                            uid: node_uid.into(),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}
