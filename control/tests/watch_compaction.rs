//! A kube-rs watcher (what skiff-proxy and skiff-kubelet use) against an API server
//! that compacts every second: after idle minutes' worth of compactions it must still
//! see a Service created then, without a restart (issue: watches died after compaction).

mod common;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher::{self, Event};
use skiff_fixtures::process::{kubectl, Control};

const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: NAME\nspec:\n  ports:\n  - port: 80\n";

#[test]
#[ignore = "needs kubectl"]
fn a_watcher_sees_services_created_after_compaction() {
    let dir = std::env::temp_dir().join(format!("skiff-watchc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cp = Control::start(&dir, &["--etcd-compaction-interval", "1s"]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap().to_string();
    let apply = |name: &str| {
        let o = kubectl(
            &["--kubeconfig", &kcs, "apply", "-f", "-"],
            Some(&SERVICE.replace("NAME", name)),
        );
        assert!(o.status.success(), "{o:?}");
    };
    apply("first");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let kubeconfig = kube::config::Kubeconfig::read_from(&kc).unwrap();
    rt.spawn(async move {
        let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let api: kube::Api<Service> = kube::Api::namespaced(client, "default");
        // Short server-side watches: each resumes from the last resourceVersion seen,
        // which compaction passes while nothing happens to Services.
        let wc = watcher::Config::default().timeout(2);
        let mut s = watcher::watcher(api, wc).boxed();
        while let Some(ev) = s.next().await {
            if let Ok(Event::Apply(svc) | Event::InitApply(svc)) = ev {
                let _ = tx.send(svc.metadata.name.unwrap_or_default());
            }
        }
    });
    let seen = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str, secs| {
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(secs), async {
                while let Some(n) = rx.recv().await {
                    if n == name {
                        return true;
                    }
                }
                false
            })
            .await
            .unwrap_or(false)
        })
    };
    assert!(seen(&mut rx, "first", 20), "the watcher never started");
    // Writes elsewhere move the revision on; five compactions pass the watcher's.
    for i in 0..5 {
        let o = kubectl(
            &[
                "--kubeconfig",
                &kcs,
                "create",
                "configmap",
                &format!("noise-{i}"),
            ],
            None,
        );
        assert!(o.status.success(), "{o:?}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    apply("after-compaction");
    assert!(
        seen(&mut rx, "after-compaction", 20),
        "a Service created after compaction never reached the watcher"
    );
    drop(cp);
    // The watcher keeps retrying the dead server: do not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
}
