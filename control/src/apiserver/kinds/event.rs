//! core/v1 Event: columns as kubectl get events prints them (no NAME).

use super::super::table::{age, c, str_of, Col};
use super::{typed_as, Strategy};
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct Event;

impl Strategy for Event {
    typed_as!(k8s_openapi::api::core::v1::Event);

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let last = ["lastTimestamp", "eventTime", "firstTimestamp"]
            .iter()
            .find_map(|k| o[*k].as_str())
            .map(|t| age(&json!({"metadata": {"creationTimestamp": t}}), now))
            .unwrap_or_else(|| age(o, now));
        let obj = &o["involvedObject"];
        vec![
            c("Last Seen", last),
            c("Type", str_of(&o["type"])),
            c("Reason", str_of(&o["reason"])),
            c(
                "Object",
                format!(
                    "{}/{}",
                    str_of(&obj["kind"]).to_lowercase(),
                    str_of(&obj["name"])
                ),
            ),
            c("Message", str_of(&o["message"])),
        ]
    }
}
