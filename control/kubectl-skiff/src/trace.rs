//! A pod's path, assembled from what each component recorded of its own step (see
//! `skiff_apimachinery::trace`): the ReplicaSet controller's create, the scheduler's
//! choice, the kubelet's sandbox, images and containers, readiness, the EndpointSlice
//! write and each node's proxy programming its rules. Pure: the caller fetches.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_apimachinery::trace::{self, Step};
use std::time::{Duration, SystemTime};

/// One line of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub step: String,
    /// The component that measured it (and where).
    pub by: String,
    pub start: Option<SystemTime>,
    pub duration: Option<Duration>,
    pub detail: String,
    /// The step has not happened: `detail` says why.
    pub pending: bool,
}

impl Row {
    fn measured(step: impl Into<String>, by: impl Into<String>, s: &Step, detail: String) -> Row {
        Row {
            step: step.into(),
            by: by.into(),
            start: Some(s.start),
            duration: Some(s.duration),
            detail: s.detail.clone().unwrap_or(detail),
            pending: false,
        }
    }

    pub fn end(&self) -> Option<SystemTime> {
        Some(self.start? + self.duration.unwrap_or_default())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub pod: String,
    pub node: Option<String>,
    pub phase: String,
    pub rows: Vec<Row>,
}

impl Trace {
    /// Everything a pod start involves has happened (ready, and its rules programmed
    /// where Services select it).
    pub fn complete(&self) -> bool {
        let has = |p: &str| {
            self.rows
                .iter()
                .any(|r| r.step.starts_with(p) && !r.pending)
        };
        !self.rows.iter().any(|r| r.pending)
            && has("ready")
            && (!has("endpointslice") || has("rules"))
    }
}

/// What the caller fetched for one pod.
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    /// Events about the pod.
    pub pod_events: &'a [Event],
    /// Events about the pod's controlling owner (its ReplicaSet).
    pub owner_events: &'a [Event],
    /// EndpointSlices that hold the pod.
    pub slices: &'a [EndpointSlice],
    /// Events about those slices (the proxies' RulesProgrammed).
    pub slice_events: &'a [Event],
}

fn step_of(e: &Event) -> Option<Step> {
    e.metadata
        .annotations
        .as_ref()
        .and_then(Step::from_annotations)
}

fn by(e: &Event) -> String {
    let component = e
        .reporting_component
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
        .unwrap_or_default();
    let host = e
        .reporting_instance
        .clone()
        .filter(|h| !h.is_empty())
        .or_else(|| e.source.as_ref().and_then(|s| s.host.clone()));
    match host {
        Some(h) if component == "kubelet" || component == "kube-proxy" => {
            format!("{component}/{h}")
        }
        _ => component,
    }
}

/// The latest measured event with this reason (and field path, when given).
fn latest<'a>(events: &'a [Event], reason: &str, field: Option<&str>) -> Option<(&'a Event, Step)> {
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| field.is_none_or(|f| e.involved_object.field_path.as_deref() == Some(f)))
        .filter_map(|e| step_of(e).map(|s| (e, s)))
        .max_by_key(|(_, s)| s.start)
}

/// Why the pod is stuck before `step`: its newest warning, or a container's waiting
/// reason, or that the step simply has not come yet.
fn why_pending(i: &Inputs, step: &str, by: &str) -> Row {
    let warning = i
        .pod_events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("")
            )
        });
    let waiting = i
        .pod
        .status
        .iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            (reason != "ContainerCreating" && reason != "PodInitializing").then(|| {
                format!(
                    "{}: {reason}: {}",
                    c.name,
                    w.message.as_deref().unwrap_or("")
                )
            })
        });
    Row {
        step: step.into(),
        by: by.into(),
        start: None,
        duration: None,
        detail: waiting.or(warning).unwrap_or_else(|| "not yet".into()),
        pending: true,
    }
}

pub fn assemble(i: &Inputs) -> Trace {
    let pod = i.pod;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let kubelet = format!("kubelet/{}", node.as_deref().unwrap_or("?"));
    let mut rows = Vec::new();
    let trace = |rows: Vec<Row>| Trace {
        pod: format!(
            "{}/{name}",
            pod.metadata.namespace.as_deref().unwrap_or("default")
        ),
        node: node.clone(),
        phase: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        rows,
    };

    // Created: by its ReplicaSet (measured), or as the API server stamped it.
    let created = format!("Created pod: {name}");
    let by_owner = i
        .owner_events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .filter(|e| e.message.as_deref() == Some(created.as_str()))
        .find_map(|e| step_of(e).map(|s| (e, s)));
    match by_owner {
        Some((e, s)) => rows.push(Row::measured("created", by(e), &s, created)),
        None => rows.push(Row {
            step: "created".into(),
            by: "kube-apiserver".into(),
            start: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0)),
            duration: None,
            detail: "creationTimestamp (whole seconds)".into(),
            pending: false,
        }),
    }

    match latest(i.pod_events, "Scheduled", None) {
        Some((e, s)) => rows.push(Row::measured(
            "scheduled",
            by(e),
            &s,
            e.message.clone().unwrap_or_default(),
        )),
        None => {
            rows.push(why_pending(i, "scheduled", "default-scheduler"));
            return trace(rows);
        }
    }

    let Some((sandbox_event, sandbox)) = latest(i.pod_events, "SandboxReady", None) else {
        rows.push(why_pending(i, "sandbox", &kubelet));
        return trace(rows);
    };
    let seen = sandbox_event
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(trace::SEEN))
        .and_then(|t| trace::parse_time(t));
    if let Some(seen) = seen {
        rows.push(Row {
            step: "kubelet saw it".into(),
            by: by(sandbox_event),
            start: Some(seen),
            duration: Some(sandbox.start.duration_since(seen).unwrap_or_default()),
            detail: "until it began the sandbox".into(),
            pending: false,
        });
    }
    rows.push(Row::measured(
        "sandbox",
        by(sandbox_event),
        &sandbox,
        String::new(),
    ));

    let spec = pod.spec.clone().unwrap_or_default();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (c, "initContainers"))
        .chain(spec.containers.iter().map(|c| (c, "containers")));
    for (c, list) in containers {
        let field = format!("spec.{list}{{{}}}", c.name);
        for (reason, step) in [
            ("Pulled", "image"),
            ("Created", "create"),
            ("Started", "start"),
        ] {
            match latest(i.pod_events, reason, Some(&field)) {
                Some((e, s)) => rows.push(Row::measured(
                    format!("{step} {}", c.name),
                    by(e),
                    &s,
                    e.message.clone().unwrap_or_default(),
                )),
                None => {
                    rows.push(why_pending(i, &format!("{step} {}", c.name), &kubelet));
                    return trace(rows);
                }
            }
        }
    }

    match latest(i.pod_events, "PodReady", None) {
        Some((e, s)) => rows.push(Row::measured("ready", by(e), &s, String::new())),
        None => {
            rows.push(why_pending(i, "ready", &kubelet));
            return trace(rows);
        }
    }

    for sl in i.slices {
        let slice_name = sl.metadata.name.clone().unwrap_or_default();
        let Some(s) = sl
            .metadata
            .annotations
            .as_ref()
            .and_then(Step::from_annotations)
        else {
            continue;
        };
        rows.push(Row::measured(
            format!("endpointslice {slice_name}"),
            "endpointslice-controller",
            &s,
            String::new(),
        ));
        let uid = sl.metadata.uid.as_deref();
        let mut programmed: Vec<Row> = i
            .slice_events
            .iter()
            .filter(|e| e.involved_object.uid.as_deref() == uid)
            .filter(|e| e.reason.as_deref() == Some("RulesProgrammed"))
            .filter_map(|e| {
                let st = step_of(e)?;
                let host = e.reporting_instance.clone().unwrap_or_default();
                Some(Row::measured(
                    format!("rules on {host}"),
                    by(e),
                    &st,
                    String::new(),
                ))
            })
            .collect();
        programmed.sort_by_key(|r| r.start);
        if programmed.is_empty() {
            programmed.push(Row {
                step: "rules".into(),
                by: "kube-proxy".into(),
                start: None,
                duration: None,
                detail: "no node has programmed this slice's rules yet".into(),
                pending: true,
            });
        }
        rows.extend(programmed);
    }
    trace(rows)
}

#[cfg(test)]
mod tests;
