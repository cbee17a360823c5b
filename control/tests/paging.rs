//! Paged lists as kube-apiserver serves them: every page of one list is read at the
//! first page's revision (the continue token carries it), so changes made while a client
//! pages do not tear the list; once that revision is compacted the token is refused
//! with 410 Expired. On both stores.

mod common;
use common::Backend;
use serde_json::Value;
use skiff_fixtures::process::{kubectl, Control};

fn paging(extra: &[&str], name: &str) {
    let dir = std::env::temp_dir().join(format!("skiff-paging-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut args = vec!["--etcd-compaction-interval", "1s"];
    args.extend_from_slice(extra);
    let cp = Control::start(&dir, &args);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap().to_string();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--kubeconfig", kcs.as_str()];
        all.extend_from_slice(args);
        kubectl(&all, stdin)
    };
    let ok = |args: &[&str]| {
        let o = run(args, None);
        assert!(o.status.success(), "{args:?}: {o:?}");
    };
    ok(&["create", "namespace", "paging"]);
    for i in 0..6 {
        ok(&["-n", "paging", "create", "configmap", &format!("p-{i}")]);
    }
    let get = |q: &str| -> (bool, Value, String) {
        let o = run(
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/paging/configmaps?{q}"),
            ],
            None,
        );
        let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (
            o.status.success(),
            v,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, p1, _) = get("limit=2");
    assert_eq!(names(&p1), ["p-0", "p-1"]);
    assert_eq!(p1["metadata"]["remainingItemCount"], 4);
    let rv = p1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    // The list changes while the client pages.
    ok(&["-n", "paging", "delete", "configmap", "p-3"]);
    ok(&["-n", "paging", "create", "configmap", "p-2a"]);
    ok(&["-n", "paging", "label", "configmap", "p-4", "late=yes"]);
    let (_, p2, _) = get(&format!("limit=10&continue={token}"));
    assert_eq!(names(&p2), ["p-2", "p-3", "p-4", "p-5"], "{p2}");
    assert_eq!(p2["metadata"]["resourceVersion"], rv.as_str());
    assert!(
        p2["items"][2]["metadata"]["labels"].is_null(),
        "p-4 as it was: {p2}"
    );
    assert!(p2["metadata"]["continue"].is_null());
    // A fresh list sees the changes.
    let (_, now, _) = get("");
    assert_eq!(names(&now), ["p-0", "p-1", "p-2", "p-2a", "p-4", "p-5"]);
    // Once the revision is compacted the token is refused, as kube-apiserver does.
    ok(&["-n", "paging", "create", "configmap", "later"]);
    std::thread::sleep(std::time::Duration::from_millis(2600));
    let (ok_, _, err) = get(&format!("limit=10&continue={token}"));
    assert!(!ok_);
    assert!(err.contains("too old") && err.contains("continue"), "{err}");
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs kubectl"]
fn pages_share_the_first_revision_on_the_embedded_store() {
    paging(&[], "embedded");
}

#[test]
#[ignore = "needs kubectl and etcd"]
fn pages_share_the_first_revision_on_etcd() {
    let b = Backend::etcd("paging");
    let Backend::Etcd(c) = &b else { unreachable!() };
    let eps = c.endpoints.join(",");
    paging(&["--etcd-servers", &eps], "etcd");
}
