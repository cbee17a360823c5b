//! Controllers and the scheduler write through the API's own code (one write path): what
//! they write carries what any API write carries — managedFields naming them (and the
//! subresource: status, binding), generation moved by spec changes — and the scheduler
//! binds through pods/binding (spec.nodeName with PodScheduled=True). The deployment
//! controller's scaling shows as ScalingReplicaSet events.

mod common;
use serde_json::Value;
use skiff_fixtures::process::{kubectl, Control};
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs kubectl"]
fn controller_and_scheduler_writes_go_through_the_api() {
    let dir = std::env::temp_dir().join(format!("skiff-writepath-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap().to_string();
    let run = |args: &[&str], stdin: Option<&str>| -> Value {
        let mut all = vec!["--kubeconfig", kcs.as_str()];
        all.extend_from_slice(args);
        let o = kubectl(&all, stdin);
        assert!(o.status.success(), "{args:?}: {o:?}");
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    };
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"},"status":{"conditions":[{"type":"Ready","status":"True"}],"allocatable":{"cpu":"4","memory":"8Gi","pods":"10"}}}"#;
    run(&["create", "-f", "-"], Some(node));
    run(&["create", "deployment", "web", "--image", "nginx"], None);
    let end = Instant::now() + Duration::from_secs(20);
    let pod = loop {
        let pods = run(
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "json",
                "--show-managed-fields",
            ],
            None,
        );
        if let Some(p) = pods["items"].as_array().and_then(|i| i.first()) {
            if p["spec"]["nodeName"] == "n1" {
                break p.clone();
            }
        }
        assert!(Instant::now() < end, "no bound pod: {pods}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let managers = |o: &Value| -> Vec<(String, String)> {
        o["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["manager"].as_str().unwrap_or("").to_string(),
                    m["subresource"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let pm = managers(&pod);
    assert!(
        pm.contains(&("kube-controller-manager".into(), "".into())),
        "{pm:?}"
    );
    assert!(
        pm.contains(&("default-scheduler".into(), "binding".into())),
        "{pm:?}"
    );
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled").cloned())
        .unwrap();
    assert_eq!(scheduled["status"], "True");
    // The ReplicaSet: its status written as status, its scale moving its generation.
    let rs = |want: i64| -> Value {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let l = run(
                &[
                    "get",
                    "rs",
                    "-l",
                    "app=web",
                    "-o",
                    "json",
                    "--show-managed-fields",
                ],
                None,
            );
            let r = l["items"][0].clone();
            if r["spec"]["replicas"] == want && r["status"]["replicas"] == want {
                return r;
            }
            assert!(Instant::now() < end, "rs at {want}: {l}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let r1 = rs(1);
    let rm = managers(&r1);
    assert!(
        rm.contains(&("kube-controller-manager".into(), "status".into())),
        "{rm:?}"
    );
    let g1 = r1["metadata"]["generation"].as_i64().unwrap();
    run(&["scale", "deployment", "web", "--replicas", "2"], None);
    let r2 = rs(2);
    assert_eq!(
        r2["metadata"]["generation"].as_i64().unwrap(),
        g1 + 1,
        "{r2}"
    );
    assert_eq!(
        r2["status"]["observedGeneration"].as_i64(),
        Some(g1 + 1),
        "{r2}"
    );
    // The Deployment's events say so, as kube's deployment controller records them.
    let rs_name = r2["metadata"]["name"].as_str().unwrap().to_string();
    let events = run(
        &[
            "get",
            "events",
            "--field-selector",
            "reason=ScalingReplicaSet",
            "-o",
            "json",
        ],
        None,
    );
    let msgs: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "Deployment")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        msgs.contains(&format!("Scaled up replica set {rs_name} to 1 from 0").as_str()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&format!("Scaled up replica set {rs_name} to 2 from 1").as_str()),
        "{msgs:?}"
    );
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
