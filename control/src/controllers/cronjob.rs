//! CronJob: a Job from `jobTemplate` at each time the schedule names (in `timeZone`,
//! UTC without one), as kube's cronjob controller v2 does: the Job is named after the
//! scheduled minute (`<cronjob>-<unix minutes>`) so a time is run at most once,
//! `concurrencyPolicy` Forbid skips a time while a Job still runs and Replace deletes
//! the running ones, a time missed by more than `startingDeadlineSeconds` is skipped,
//! finished Jobs beyond the history limits are deleted, and `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime` say what happened.

use super::controller::live;
use super::reflector::{Kind, Reflector};
use super::*;
use crate::apiserver::kinds::cronjob::{schedule, time_zone};
use crate::apiserver::table::humantime_parse;
use jiff::Timestamp;

const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

fn ts(v: &Value) -> Option<Timestamp> {
    let t = humantime_parse(v.as_str()?).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    Timestamp::from_second(secs).ok()
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn finished(job: &Value) -> Option<&'static str> {
    for c in job["status"]["conditions"].as_array().into_iter().flatten() {
        if c["status"] == "True" {
            match c["type"].as_str() {
                Some("Complete") => return Some("Complete"),
                Some("Failed") => return Some("Failed"),
                _ => {}
            }
        }
    }
    None
}

/// The latest scheduled time in (`after`, `now`], if any: what is due.
pub fn due(
    cron: &croner::Cron,
    tz: &jiff::tz::TimeZone,
    after: Timestamp,
    now: Timestamp,
) -> Option<Timestamp> {
    let t = cron
        .find_previous_occurrence(&now.to_zoned(tz.clone()), true)
        .ok()?
        .timestamp();
    (t > after).then_some(t)
}

/// Delete one of the CronJob's Jobs (its pods follow by garbage collection).
fn delete_job(store: &Store, cj: &Value, job: &Value) -> Result<(), StoreError> {
    let name = job["metadata"]["name"].as_str().unwrap_or("");
    super::delete(store, &key_of(job, "batch", "jobs"), None)?;
    let msg = format!("Deleted job {name}");
    record_event(
        store,
        cj,
        "Normal",
        "SuccessfulDelete",
        &msg,
        "cronjob-controller",
    );
    Ok(())
}

const CRONJOBS: &str = "/registry/batch/cronjobs/";
const JOBS: &str = "/registry/batch/jobs/";

pub(crate) struct Controller;

impl super::controller::Reconciler for Controller {
    fn name(&self) -> &'static str {
        "cronjob"
    }

    fn owner_kind(&self) -> Option<&'static str> {
        Some("CronJob")
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::whole(CRONJOBS), Kind::whole(JOBS).owned_by("CronJob")]
    }

    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        live(cache, key).map_or(Ok(Action::AwaitChange), |cj| sync(store, cache, cj))
    }
}

fn sync(store: &Store, cache: &Reflector, cj: &Value) -> Result<Action, StoreError> {
    let ns = cj["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = cj["metadata"]["name"].as_str().unwrap_or("");
    let uid = cj["metadata"]["uid"].as_str().unwrap_or("");
    let spec = &cj["spec"];
    let id = format!("{ns}/{name}");
    let mut jobs: Vec<Value> = cache
        .controlled_by(uid, JOBS)
        .filter(|j| j["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect();
    let mut status = cj["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let now = Timestamp::now();
    let mut wake = None;
    if spec["suspend"] != true {
        let (cron, tz) = match (
            schedule(spec["schedule"].as_str().unwrap_or("")),
            time_zone(spec["timeZone"].as_str()),
        ) {
            (Ok(c), Ok(t)) => (c, t),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(cronjob = %id, error = %e, "cannot schedule");
                return Ok(Action::AwaitChange); // a change of the CronJob brings it back
            }
        };
        // Back at the next scheduled time (kube's controller v2 requeues the same way).
        wake = cron
            .find_next_occurrence(&now.to_zoned(tz.clone()), false)
            .ok()
            .map(|next| {
                let ms = next.timestamp().as_millisecond() - Timestamp::now().as_millisecond();
                Duration::from_millis(ms.max(0) as u64 + 1)
            });
        let after = ts(&status["lastScheduleTime"])
            .or_else(|| ts(&cj["metadata"]["creationTimestamp"]))
            .unwrap_or(now);
        if let Some(t) = due(&cron, &tz, after, now) {
            let late = now.as_second() - t.as_second();
            let active: Vec<&Value> = jobs.iter().filter(|j| finished(j).is_none()).collect();
            let policy = spec["concurrencyPolicy"].as_str().unwrap_or("Allow");
            if spec["startingDeadlineSeconds"]
                .as_i64()
                .is_some_and(|d| late > d)
            {
                let msg = format!("Missed scheduled time to start a job: {}", rfc3339(t));
                record_event(
                    store,
                    cj,
                    "Warning",
                    "MissSchedule",
                    &msg,
                    "cronjob-controller",
                );
                status["lastScheduleTime"] = json!(rfc3339(t));
            } else if policy == "Forbid" && !active.is_empty() {
                // Tried again at the next pass, while the time is not too late.
                tracing::debug!(cronjob = %id, "a job is still active: not starting another");
            } else {
                if policy == "Replace" {
                    for j in &active {
                        delete_job(store, cj, j)?;
                    }
                    jobs.retain(|j| finished(j).is_some());
                }
                let jname = format!("{name}-{}", t.as_second() / 60);
                let tpl = &spec["jobTemplate"];
                let mut meta = match &tpl["metadata"] {
                    Value::Object(m) => Value::Object(m.clone()),
                    _ => json!({}),
                };
                meta["name"] = json!(jname);
                meta["namespace"] = json!(ns);
                meta["ownerReferences"] = json!([owner_ref(cj, "batch/v1", "CronJob")]);
                if !meta["annotations"].is_object() {
                    meta["annotations"] = json!({});
                }
                meta["annotations"][SCHEDULED_AT] = json!(rfc3339(t));
                let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": tpl["spec"]});
                if let Some(j) = create(store, "batch", "jobs", job)? {
                    tracing::info!(cronjob = %id, job = %jname, "created job");
                    record_event(
                        store,
                        cj,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created job {jname}"),
                        "cronjob-controller",
                    );
                    jobs.push(j);
                }
                status["lastScheduleTime"] = json!(rfc3339(t));
            }
        }
    }
    // History: the oldest finished Jobs beyond the limits go.
    for (kind, limit) in [
        (
            "Complete",
            spec["successfulJobsHistoryLimit"].as_i64().unwrap_or(3),
        ),
        (
            "Failed",
            spec["failedJobsHistoryLimit"].as_i64().unwrap_or(1),
        ),
    ] {
        let mut done: Vec<&Value> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
        done.sort_by_key(|j| {
            j["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        });
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        for j in done.into_iter().take(extra) {
            delete_job(store, cj, j)?;
        }
    }
    let active: Vec<Value> = jobs
        .iter()
        .filter(|j| finished(j).is_none())
        .map(|j| json!({"kind": "Job", "namespace": ns, "name": j["metadata"]["name"], "uid": j["metadata"]["uid"], "apiVersion": "batch/v1", "resourceVersion": j["metadata"]["resourceVersion"]}))
        .collect();
    if active.is_empty() {
        status.as_object_mut().expect("object").remove("active");
    } else {
        status["active"] = json!(active);
    }
    if let Some(t) = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j["status"]["completionTime"].as_str())
        .max()
    {
        status["lastSuccessfulTime"] = json!(t);
    }
    if cj["status"] != status {
        let mut next = cj.clone();
        next["status"] = status;
        update_status(store, &key_of(cj, "batch", "cronjobs"), &next)?;
    }
    Ok(wake.map_or(Action::AwaitChange, Action::Requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_scheduled_time_is_due_once() {
        let utc = jiff::tz::TimeZone::UTC;
        let every5 = schedule("*/5 * * * *").unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        // Created 10:01, now 10:07: 10:05 is due; after it ran, nothing until 10:10.
        assert_eq!(
            due(
                &every5,
                &utc,
                at("2026-01-01T10:01:00Z"),
                at("2026-01-01T10:07:30Z")
            ),
            Some(at("2026-01-01T10:05:00Z"))
        );
        assert_eq!(
            due(
                &every5,
                &utc,
                at("2026-01-01T10:05:00Z"),
                at("2026-01-01T10:09:59Z")
            ),
            None
        );
        // Missed several: only the latest runs (kube's behaviour without a backlog).
        assert_eq!(
            due(
                &every5,
                &utc,
                at("2026-01-01T10:05:00Z"),
                at("2026-01-01T10:31:00Z")
            ),
            Some(at("2026-01-01T10:30:00Z"))
        );
        // In a time zone: 9:00 in New York is 14:00 UTC in winter.
        let ny = time_zone(Some("America/New_York")).unwrap();
        let nine = schedule("0 9 * * *").unwrap();
        assert_eq!(
            due(
                &nine,
                &ny,
                at("2026-01-05T12:00:00Z"),
                at("2026-01-05T14:00:30Z")
            ),
            Some(at("2026-01-05T14:00:00Z"))
        );
        assert!(schedule("@hourly").is_ok());
        assert!(schedule("TZ=UTC * * * * *").is_err());
        assert!(schedule("61 * * * *").is_err());
        assert!(schedule("* * * * * *").is_err(), "no seconds field");
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }
}
