//! Events about pods (probe failures, kills) and about the node (Starting, NodeReady,
//! NodeNotReady), as `kubectl describe` and `kubectl get events` show them. Posting is
//! best effort: an event that cannot be written is logged.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use skiff_apimachinery::trace::Step;

pub async fn record(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    field_path: Option<String>,
    warning: bool,
    reason: &str,
    message: String,
) {
    let kind = if warning { Kind::Warning } else { Kind::Normal };
    record_as(client, node, pod, field_path, kind, reason, message).await
}

/// Normal, Warning, or a Normal event that also carries the step it reports as
/// measured here: its start as eventTime, its duration and detail (and any `extra`
/// trace annotations) as annotations, what `kubectl skiff trace` shows.
pub enum Kind<'a> {
    Normal,
    Warning,
    Step(&'a Step, &'a [(&'a str, String)]),
}

pub async fn record_as(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    field_path: Option<String>,
    kind: Kind<'_>,
    reason: &str,
    message: String,
) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let involved = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        uid: pod.metadata.uid.clone(),
        field_path,
        ..Default::default()
    };
    post(client, node, &ns, involved, kind, reason, message).await;
}

/// An event about this node, as the kubelet records them (its node reference's uid is
/// the node's name).
pub async fn record_node(
    client: &kube::Client,
    node: &str,
    warning: bool,
    reason: &str,
    message: String,
) {
    let involved = ObjectReference {
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        ..Default::default()
    };
    let kind = if warning { Kind::Warning } else { Kind::Normal };
    post(client, node, "default", involved, kind, reason, message).await;
}

async fn post(
    client: &kube::Client,
    node: &str,
    ns: &str,
    involved: ObjectReference,
    kind: Kind<'_>,
    reason: &str,
    message: String,
) {
    let warning = matches!(kind, Kind::Warning);
    let (annotations, event_time) = match kind {
        Kind::Step(s, extra) => {
            let mut a = s.annotations();
            a.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
            let at = Timestamp::try_from(s.start).unwrap_or_else(|_| Timestamp::now());
            (Some(a), Some(MicroTime(at)))
        }
        _ => (None, None),
    };
    let name = involved.name.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    // The same event again (object, field, reason, message) is one Event whose count
    // and lastTimestamp grow, as kube's event recorder aggregates: named after them.
    let id = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&involved.uid, &involved.field_path, reason, &message).hash(&mut h);
        format!("{name}.{:016x}", h.finish())
    };
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(id.clone()),
            namespace: Some(ns.to_string()),
            annotations,
            ..Default::default()
        },
        event_time,
        involved_object: involved,
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let r = match api.create(&PostParams::default(), &ev).await {
        Err(kube::Error::Api(e)) if e.code == 409 => match api.get(&id).await {
            Ok(old) => {
                // The same step again (a restart's Created): the latest measurement.
                let mut patch = serde_json::json!({
                    "count": old.count.unwrap_or(1) + 1,
                    "lastTimestamp": ev.last_timestamp,
                });
                if ev.event_time.is_some() {
                    patch["eventTime"] = serde_json::json!(ev.event_time);
                    patch["metadata"] = serde_json::json!({"annotations": ev.metadata.annotations});
                }
                api.patch(&id, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        },
        r => r.map(|_| ()),
    };
    if let Err(e) = r {
        tracing::warn!(namespace = ns, object = %name, reason, error = %e, "post event");
    }
}
