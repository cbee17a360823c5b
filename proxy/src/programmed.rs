//! Telling the cluster when an EndpointSlice's change reached this node's rules: a
//! RulesProgrammed event on the slice per node (one object per slice and node, updated
//! in place), carrying the sync's start and duration as a trace step, so `kubectl skiff
//! trace` can show the last step of a pod's path. Only slices whose write carries a
//! recent trace step are reported (a restarted proxy does not announce every slice
//! again), at most [`MAX_PER_SYNC`] per sync.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use skiff_apimachinery::trace::Step;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const MAX_PER_SYNC: usize = 100;
/// Slice changes older than this are not announced.
pub const RECENT: Duration = Duration::from_secs(600);

/// A slice version waiting to be announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

/// Which slice versions this node has announced.
#[derive(Default)]
pub struct Tracker {
    announced: HashMap<String, String>,
}

impl Tracker {
    /// The slice versions in `slices` (the state a sync programmed) not yet announced
    /// whose write is recent; they count as announced from here on.
    pub fn due(&mut self, slices: &[Arc<EndpointSlice>], now: SystemTime) -> Vec<Change> {
        let mut out = Vec::new();
        for s in slices {
            let m = &s.metadata;
            let (Some(uid), Some(rv)) = (&m.uid, &m.resource_version) else {
                continue;
            };
            if self.announced.get(uid) == Some(rv) {
                continue;
            }
            let recent = m
                .annotations
                .as_ref()
                .and_then(Step::from_annotations)
                .is_some_and(|st| now.duration_since(st.end()).unwrap_or_default() < RECENT);
            self.announced.insert(uid.clone(), rv.clone());
            if recent && out.len() < MAX_PER_SYNC {
                out.push(Change {
                    namespace: m.namespace.clone().unwrap_or_default(),
                    name: m.name.clone().unwrap_or_default(),
                    uid: uid.clone(),
                    resource_version: rv.clone(),
                });
            }
        }
        let live: std::collections::HashSet<&str> = slices
            .iter()
            .filter_map(|s| s.metadata.uid.as_deref())
            .collect();
        self.announced.retain(|uid, _| live.contains(uid.as_str()));
        out
    }
}

/// Post (or update) the RulesProgrammed event of `change` on `node`.
pub async fn announce(
    client: kube::Client,
    node: &str,
    change: &Change,
    step: &Step,
) -> Result<(), kube::Error> {
    let api: Api<Event> = Api::namespaced(client, &change.namespace);
    let name = format!("{}.{node}.programmed", change.name);
    let now = Time(Timestamp::now());
    let at = MicroTime(Timestamp::try_from(step.start).unwrap_or_else(|_| Timestamp::now()));
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(change.namespace.clone()),
            annotations: Some(step.annotations()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("discovery.k8s.io/v1".into()),
            kind: Some("EndpointSlice".into()),
            name: Some(change.name.clone()),
            namespace: Some(change.namespace.clone()),
            uid: Some(change.uid.clone()),
            resource_version: Some(change.resource_version.clone()),
            ..Default::default()
        },
        reason: Some("RulesProgrammed".into()),
        message: Some(format!("Service rules programmed on node {node}")),
        type_: Some("Normal".into()),
        source: Some(EventSource {
            component: Some("kube-proxy".into()),
            host: Some(node.into()),
        }),
        event_time: Some(at),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("kube-proxy".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ev).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({
                "metadata": {"annotations": ev.metadata.annotations},
                "involvedObject": ev.involved_object,
                "eventTime": ev.event_time,
                "lastTimestamp": ev.last_timestamp,
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
        }
        r => r.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(uid: &str, rv: &str, written: Option<SystemTime>) -> Arc<EndpointSlice> {
        let mut s = EndpointSlice::default();
        s.metadata.namespace = Some("default".into());
        s.metadata.name = Some(format!("web-{uid}"));
        s.metadata.uid = Some(uid.into());
        s.metadata.resource_version = Some(rv.into());
        s.metadata.annotations = written.map(|t| {
            Step {
                start: t,
                duration: Duration::from_millis(3),
                detail: None,
            }
            .annotations()
        });
        Arc::new(s)
    }

    #[test]
    fn each_recent_slice_version_is_announced_once() {
        let now = SystemTime::now();
        let mut t = Tracker::default();
        let a1 = slice("a", "1", Some(now));
        let old = slice("b", "1", Some(now - Duration::from_secs(3600)));
        let untraced = slice("c", "1", None);
        let due = t.due(&[a1.clone(), old.clone(), untraced.clone()], now);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].uid.as_str(), due[0].resource_version.as_str()),
            ("a", "1")
        );
        assert!(t.due(&[a1, old.clone(), untraced.clone()], now).is_empty());
        let a2 = slice("a", "2", Some(now));
        let due = t.due(&[a2, old, untraced], now);
        assert_eq!(due[0].resource_version, "2", "a new version is news");
    }

    #[test]
    fn a_sync_announces_at_most_its_share() {
        let now = SystemTime::now();
        let many: Vec<_> = (0..MAX_PER_SYNC + 20)
            .map(|i| slice(&i.to_string(), "1", Some(now)))
            .collect();
        let mut t = Tracker::default();
        assert_eq!(t.due(&many, now).len(), MAX_PER_SYNC);
        assert!(
            t.due(&many, now).is_empty(),
            "the rest are skipped, not queued"
        );
    }
}
