//! skiff-control's log: one structured line per request (verb, URI, user, status,
//! latency) at the default level, as JSON with --log-format json; decisions of the
//! scheduler at -v 2.

mod common;
use skiff_fixtures::process::{kubectl, Control};

#[test]
#[ignore = "needs kubectl"]
fn one_json_line_per_request_and_decisions_at_v2() {
    let dir = std::env::temp_dir().join(format!("skiff-reqlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &["--log-format", "json", "-v", "2"]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap();
    let o = kubectl(&["--kubeconfig", kcs, "get", "configmap", "missing"], None);
    assert!(!o.status.success());
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"},"status":{"conditions":[{"type":"Ready","status":"True"}],"allocatable":{"cpu":"4","memory":"8Gi","pods":"10"}}}"#;
    let o = kubectl(&["--kubeconfig", kcs, "create", "-f", "-"], Some(node));
    assert!(o.status.success(), "{o:?}");
    let o = kubectl(
        &["--kubeconfig", kcs, "run", "p", "--image", "busybox"],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let lines = loop {
        let lines: Vec<serde_json::Value> = cp
            .log_lines("{")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.iter().any(|l| l["fields"]["message"] == "scheduled") {
            break lines;
        }
        assert!(
            std::time::Instant::now() < end,
            "no scheduling decision logged: {lines:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let get = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "request"
                && l["fields"]["uri"] == "/api/v1/namespaces/default/configmaps/missing"
        })
        .unwrap_or_else(|| panic!("no request line: {lines:#?}"));
    let f = &get["fields"];
    assert_eq!(f["verb"], "get", "{get}");
    assert_eq!(f["user"], "skiff-admin", "{get}");
    assert_eq!(f["status"], 404, "{get}");
    assert!(
        f["latency_ms"]
            .as_str()
            .is_some_and(|l| l.parse::<f64>().is_ok()),
        "{get}"
    );
    assert_eq!(get["level"], "INFO");
    let sched = lines
        .iter()
        .find(|l| l["fields"]["message"] == "scheduled")
        .unwrap();
    assert_eq!(sched["level"], "DEBUG");
    assert_eq!(sched["fields"]["pod"], "default/p", "{sched}");
    assert_eq!(sched["fields"]["node"], "n1", "{sched}");
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
