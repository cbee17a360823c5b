//! A Kubernetes cluster in QEMU VMs, formed as the README forms one (`skiff-vm up
//! --kubernetes`: the control plane on node-1, node-2 and node-3 joined with a bootstrap
//! token), driven by the host's real kubectl through node-1's forwarded API port. The
//! seed's two examples: a shell pod Running with its own IP and hostname; a web
//! Deployment of 3 spread over both workers behind a Service, reached by ClusterIP and by
//! DNS name from a pod on the other worker (host-gw routes between the workers, cluster
//! DNS on each node).

use skiff_tests::*;
use skiff_vm::{Cluster, UpOptions};
use std::process::Command;
use std::time::{Duration, Instant};

struct Down(String);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = Cluster::down(&self.0);
    }
}

#[test]
#[ignore = "needs a VM (QEMU)"]
fn a_three_node_cluster_runs_the_seed_examples() {
    if let Some(why) = unavailable() {
        panic!("needs a VM: {why}");
    }
    let ws = workspace();
    let tar = ws.join("target/vm-images/busybox.tar");
    std::fs::create_dir_all(tar.parent().unwrap()).unwrap();
    let o = Command::new(ws.join("scripts/images/busybox-oci.sh"))
        .arg(&tar)
        .env("LAYER_GZIP", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let name = "skiff-k8s";
    let _ = Cluster::down(name);
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = UpOptions {
        name: name.into(),
        nodes: 3,
        memory_mb: 768,
        cpus: 1,
        workspace: ws.clone(),
        agent_bin: binary("skiff-vm"),
        link_against: vec![binary("skiff-runtime"), binary("skiff-control")],
        accel: std::env::var("SKIFF_VM_ACCEL").unwrap_or_else(|_| "auto".into()),
        api_forward: Some(api_port),
    };
    let t0 = Instant::now();
    let c = Cluster::up(&opts).expect("boot three VMs");
    let _down = Down(name.into());
    let form = skiff_vm::kubernetes::FormOptions {
        bin_dir: "/skiff/target/debug".into(),
        images: vec!["/skiff/target/vm-images/busybox.tar".into()],
        api_port,
        control_args: String::new(),
    };
    let kc_text = skiff_vm::kubernetes::form(&c, &form).expect("form the cluster");
    let kc = c.dir.join("kubeconfig");
    assert_eq!(std::fs::read_to_string(&kc).unwrap(), kc_text);
    let kc = kc.to_str().unwrap().to_string();
    let k = |args: &[&str]| -> (bool, String) {
        let o = Command::new("kubectl")
            .args(["--kubeconfig", &kc, "--request-timeout", "30s"])
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let logs = |c: &Cluster| -> String {
        let mut s = String::new();
        for n in ["node-2", "node-3"] {
            if let Ok(r) = c.exec(
                n,
                &[
                    "sh",
                    "-c",
                    "tail -15 /var/log/skiff/kubelet.log; tail -5 /var/log/skiff/proxy.log",
                ],
                Duration::from_secs(30),
            ) {
                s.push_str(&format!("--- {n}\n{}", r.stdout));
            }
        }
        s
    };
    let wait = |what: &str, secs: u64, f: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < end, "{what}\n{}", logs(&c));
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait("both workers Ready", 240, &|| {
        let (_, out) = k(&["get", "nodes"]);
        out.lines().filter(|l| l.contains(" Ready ")).count() == 2
    });
    eprintln!(
        "boot to all nodes Ready: {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Example 1: a shell pod, Running, with its own IP and hostname.
    let (ok, out) = k(&[
        "run",
        "shell",
        "--image",
        "docker.io/skiff/busybox:latest",
        "--image-pull-policy",
        "IfNotPresent",
        "--restart",
        "Never",
        "--",
        "sh",
        "-c",
        "sleep 3600",
    ]);
    assert!(ok, "{out}");
    wait("the shell pod Running", 180, &|| {
        k(&["get", "pod", "shell", "-o", "jsonpath={.status.phase}"]).1 == "Running"
    });
    let ip = k(&["get", "pod", "shell", "-o", "jsonpath={.status.podIP}"]).1;
    assert!(ip.starts_with("10.244."), "{ip}");
    let (ok, host) = k(&["exec", "shell", "--", "hostname"]);
    assert!(ok && host.trim() == "shell", "{host}");

    // Example 2: web ×3 over both workers behind a Service.
    let web = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  \
               selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      \
               containers:\n      - name: web\n        image: docker.io/skiff/busybox:latest\n        \
               imagePullPolicy: IfNotPresent\n        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www']\n        \
               ports: [{containerPort: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  \
               selector: {app: web}\n  ports: [{port: 80, targetPort: 80}]\n";
    let mut apply = Command::new("kubectl")
        .args(["--kubeconfig", &kc, "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(web.as_bytes())
        .unwrap();
    assert!(apply.wait().unwrap().success());
    wait("3 web pods Running", 240, &|| {
        let (_, out) = k(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
        ]);
        out.lines().filter(|l| *l == "Running").count() == 3
    });
    let (_, nodes) = k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert!(
        nodes.contains("node-2") && nodes.contains("node-3"),
        "spread over both workers: {nodes}"
    );
    let shell_node = k(&["get", "pod", "shell", "-o", "jsonpath={.spec.nodeName}"]).1;
    let cluster_ip = k(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]).1;
    let names = k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .1;
    // From the shell pod (on one worker): by ClusterIP and by name, until every web pod
    // (two of them on the other worker) has answered.
    for target in [cluster_ip.as_str(), "web", "web.default.svc.cluster.local"] {
        let mut seen = std::collections::BTreeSet::new();
        let end = Instant::now() + Duration::from_secs(120);
        while seen.len() < 3 {
            let (ok, out) = k(&[
                "exec",
                "shell",
                "--",
                "sh",
                "-c",
                &format!("timeout 5 wget -qO- http://{target}/"),
            ]);
            if ok {
                let who = out.trim().to_string();
                assert!(names.contains(&who), "{who} is not a web pod: {names}");
                seen.insert(who);
            }
            assert!(
                Instant::now() < end,
                "{target} from {shell_node}: only {seen:?}\n{out}\n{}",
                logs(&c)
            );
        }
    }
}
