//! batch/v1 CronJob, the API side in one place: defaults, validation (the schedule
//! parsed as kube-controller-manager parses it: five fields or a descriptor like
//! `@hourly`, a time zone from the system's database), and the table columns. The
//! controller is `controllers/cronjob.rs`.

use super::super::status::ApiError;
use super::super::table::{age, c, containers_and_images, or_none, pairs, since, str_of, w, Col};
use serde_json::{json, Value};

/// The schedule as the controller evaluates it.
pub fn schedule(s: &str) -> Result<croner::Cron, String> {
    if s.trim_start().starts_with("TZ=") || s.trim_start().starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| e.to_string())
}

pub fn time_zone(tz: Option<&str>) -> Result<jiff::tz::TimeZone, String> {
    match tz {
        None | Some("") => Ok(jiff::tz::TimeZone::UTC),
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| e.to_string()),
    }
}

pub fn defaults(v: &mut Value) {
    let spec = &mut v["spec"];
    for (k, d) in [
        ("concurrencyPolicy", json!("Allow")),
        ("suspend", json!(false)),
        ("successfulJobsHistoryLimit", json!(3)),
        ("failedJobsHistoryLimit", json!(1)),
    ] {
        // kubectl's protobuf carries Go's empty string for a string it did not set.
        if spec[k].is_null() || spec[k] == "" {
            spec[k] = d;
        }
    }
}

pub fn validate(v: &Value) -> Result<(), ApiError> {
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let spec = &v["spec"];
    let bad = |m: String| Err(ApiError::invalid("CronJob", name, &m));
    let sched = spec["schedule"].as_str().unwrap_or("");
    if let Err(e) = schedule(sched) {
        return bad(format!("spec.schedule: Invalid value: \"{sched}\": {e}"));
    }
    if let Err(e) = time_zone(spec["timeZone"].as_str()) {
        return bad(format!(
            "spec.timeZone: Invalid value: \"{}\": unknown time zone {}",
            str_of(&spec["timeZone"]),
            e
        ));
    }
    match spec["concurrencyPolicy"].as_str() {
        Some("Allow" | "Forbid" | "Replace") => {}
        other => {
            return bad(format!(
                "spec.concurrencyPolicy: Unsupported value: {other:?}: supported values: \"Allow\", \"Forbid\", \"Replace\""
            ))
        }
    }
    match spec["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"].as_str() {
        Some("Never" | "OnFailure") => Ok(()),
        other => bad(format!(
            "spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\" (got {other:?})"
        )),
    }
}

pub struct CronJob;

impl super::Strategy for CronJob {
    super::typed_as!(k8s_openapi::api::batch::v1::CronJob);

    fn has_status(&self) -> bool {
        true
    }

    fn defaults(&self, v: &mut Value) {
        defaults(v)
    }

    fn validate(&self, v: &Value) -> Result<(), ApiError> {
        validate(v)
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::CRON_JOB)
    }

    fn columns(&self, o: &Value, now: std::time::SystemTime) -> Vec<Col> {
        let name = c("Name", o["metadata"]["name"].clone());
        let a = c("Age", age(o, now));
        let (spec, st) = (&o["spec"], &o["status"]);

        let tpl = &spec["jobTemplate"]["spec"];
        let (cs, images) = containers_and_images(&tpl["template"]["spec"]);
        let last = match st["lastScheduleTime"] {
            Value::Null => "<none>".to_string(),
            ref t => since(t, now),
        };
        vec![
            name,
            c("Schedule", str_of(&spec["schedule"])),
            c("Timezone", or_none(str_of(&spec["timeZone"]))),
            c(
                "Suspend",
                if spec["suspend"] == true {
                    "True"
                } else {
                    "False"
                },
            ),
            c("Active", st["active"].as_array().map_or(0, Vec::len) as i64),
            c("Last Schedule", last),
            a,
            w("Containers", cs),
            w("Images", images),
            w("Selector", or_none(pairs(&tpl["selector"]["matchLabels"]))),
        ]
    }
}
