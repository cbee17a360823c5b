//! A watch with a label selector, as kube-apiserver defines it: an object that starts
//! matching arrives as ADDED, one that stops matching as DELETED, one that never
//! matches not at all. Checked on both stores.

mod common;
use common::Backend;
use skiff_fixtures::process::{kubectl, Control};

/// The scenario against a skiff-control started with `extra` flags.
fn transitions(extra: &[&str]) {
    let dir = std::env::temp_dir().join(format!(
        "skiff-watchsel-{}-{}",
        extra.len(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, extra);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap().to_string();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--kubeconfig", kcs.as_str()];
        all.extend_from_slice(args);
        let o = kubectl(&all, stdin);
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let rv = run(
        &[
            "create",
            "configmap",
            "start",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
        None,
    );
    let url = format!(
        "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=tier%3Dweb&resourceVersion={rv}&timeoutSeconds=6"
    );
    let kcs2 = kcs.clone();
    let w =
        std::thread::spawn(move || kubectl(&["--kubeconfig", &kcs2, "get", "--raw", &url], None));
    std::thread::sleep(std::time::Duration::from_millis(500));
    run(&["create", "configmap", "a"], None);
    run(&["label", "configmap", "a", "tier=web"], None); // starts matching
    run(&["label", "--overwrite", "configmap", "a", "tier=db"], None); // stops
    run(
        &["label", "--overwrite", "configmap", "a", "tier=web"],
        None,
    ); // again
    run(
        &["patch", "configmap", "a", "-p", r#"{"data":{"k":"v"}}"#],
        None,
    ); // still
    run(&["create", "configmap", "b"], None);
    run(&["label", "configmap", "b", "tier=db"], None); // never matches
    run(&["delete", "configmap", "a"], None); // was matching
    let o = w.join().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let got: Vec<(String, String, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                e["object"]["metadata"]["labels"]["tier"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("ADDED", "a", "web"),
        // The object as it last matched.
        ("DELETED", "a", "web"),
        ("ADDED", "a", "web"),
        ("MODIFIED", "a", "web"),
        ("DELETED", "a", "web"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{out}");
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs kubectl"]
fn selector_transitions_on_the_embedded_store() {
    transitions(&[]);
}

#[test]
#[ignore = "needs kubectl and etcd"]
fn selector_transitions_on_etcd() {
    let b = Backend::etcd("watchsel");
    let Backend::Etcd(c) = &b else { unreachable!() };
    let eps = c.endpoints.join(",");
    transitions(&["--etcd-servers", &eps]);
}

/// kubectl's `-l` in kube's grammar: set-based requirements select what kube-apiserver
/// selects, and a malformed selector is a 400 that kubectl reports (not an empty list).
#[test]
#[ignore = "needs kubectl"]
fn label_selectors_in_kube_grammar() {
    let dir = std::env::temp_dir().join(format!("skiff-labelsel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kcs.as_str()];
        all.extend_from_slice(args);
        kubectl(&all, None)
    };
    for (name, labels) in [("a", "tier=web,n=1"), ("b", "tier=db,n=5"), ("c", "n=9")] {
        assert!(run(&["create", "configmap", name]).status.success());
        let mut args = vec!["label", "configmap", name];
        args.extend(labels.split(','));
        assert!(run(&args).status.success());
    }
    let names = |sel: &str| {
        let o = run(&["get", "configmaps", "-l", sel, "-o", "name"]);
        assert!(o.status.success(), "{sel}: {o:?}");
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim_start_matches("configmap/").to_string())
            .filter(|n| n != "kube-root-ca.crt")
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("tier in (web,db)"), ["a", "b"]);
    assert_eq!(names("tier notin (web)"), ["b", "c"]);
    assert_eq!(names("tier,tier!=db"), ["a"]);
    assert_eq!(names("!tier"), ["c"]);
    assert_eq!(names("n>4"), ["b", "c"]);
    let o = run(&["get", "configmaps", "-l", "tier in web"]);
    assert!(!o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unable to parse requirement"), "{err}");
    // The server's answer, not kubectl's: 400 with the reason.
    let o = run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?labelSelector=tier+in+web",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("unable to parse requirement"),
        "{err}"
    );
}
