//! Patches that race each other (or a controller's writes) are retried by the server,
//! as kube-apiserver does, unless the patch itself names a resourceVersion: then the
//! client asked for a compare-and-swap and a stale version is a 409 Conflict.

mod common;
use common::{http, Backend, Server};
use serde_json::{json, Value};

#[test]
fn concurrent_patches_without_a_version_all_apply() {
    let backend = Backend::embedded("patch-races");
    let server = Server::serve(backend.store());
    let cm = "/api/v1/namespaces/default/configmaps";
    let (code, body) = http(
        &server.addr,
        "POST",
        cm,
        "application/json",
        Some(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"seed": "x"}}),
        ),
    );
    assert_eq!(code, 201, "{body}");
    let path = format!("{cm}/c");
    let kinds = [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
    ];
    std::thread::scope(|s| {
        for t in 0..6 {
            let (addr, path) = (&server.addr, &path);
            let ct = kinds[t % kinds.len()];
            s.spawn(move || {
                for i in 0..15 {
                    let label = format!("l{t}-{i}");
                    let patch = if ct == "application/json-patch+json" {
                        json!([{"op": "add", "path": format!("/data/{label}"), "value": "x"}])
                    } else {
                        json!({"data": {label: "x"}})
                    };
                    let (code, body) = http(addr, "PATCH", path, ct, Some(&patch));
                    assert_eq!(code, 200, "{ct} patch {t}/{i}: {body}");
                }
            });
        }
    });
    let (code, body) = http(&server.addr, "GET", &path, "application/json", None);
    assert_eq!(code, 200);
    let got: Value = serde_json::from_str(&body).unwrap();
    let data = got["data"].as_object().expect("data");
    assert_eq!(data.len(), 1 + 6 * 15, "every patch applied: {data:?}");

    // A patch pinned to a stale version is refused, not retried.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"late": "x"}});
    let (code, body) = http(
        &server.addr,
        "PATCH",
        &path,
        "application/merge-patch+json",
        Some(&stale),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("Conflict"), "{body}");
}
