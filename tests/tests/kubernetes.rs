//! A Kubernetes cluster in QEMU VMs, formed as the README forms one (`skiff-vm up
//! --kubernetes`: the control plane on node-1, node-2 and node-3 joined with a bootstrap
//! token), driven by the host's real kubectl through node-1's forwarded API port. The
//! seed's two examples: a shell pod Running with its own IP and hostname; a web
//! Deployment of 3 spread over both workers behind a Service, reached by ClusterIP and by
//! DNS name from a pod on the other worker (host-gw routes between the workers, cluster
//! DNS on each node), every image pulled as typed (`busybox`, `nginx`) through the
//! cluster's registry on node-1, which every node uses as docker.io's mirror. Then what goes wrong: a container crashes and restarts in place, a
//! deleted pod is replaced, the Deployment scales 3 → 5, and a worker VM loses power —
//! its Node goes NotReady, its pods come back on the other worker while the Service keeps
//! answering, and the machine boots again with empty disks and rejoins with the token.

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

/// The host's kubectl with one kubeconfig: success and stdout+stderr.
fn kubectl(kc: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new("kubectl")
        .args(["--kubeconfig", kc, "--request-timeout", "30s"])
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
}

/// `kubectl apply -f -` of `yaml`, which must succeed.
fn apply(kc: &str, yaml: &str) {
    use std::io::Write;
    let mut c = Command::new("kubectl")
        .args(["--kubeconfig", kc, "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "kubectl apply of:\n{yaml}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tails of `files` (a shell glob list) on each of `nodes`, for a failure message.
fn tails(c: &Cluster, nodes: &[&str], files: &str) -> String {
    let mut s = String::new();
    for n in nodes {
        if let Ok(r) = c.exec(
            n,
            &["sh", "-c", &format!("tail -n 12 {files} 2>/dev/null")],
            Duration::from_secs(30),
        ) {
            s.push_str(&format!("--- {n}\n{}", r.stdout));
        }
    }
    s
}

/// Poll `f` every half second for up to `secs`; fail with `what` and `why()`.
fn eventually(what: &str, secs: u64, f: &dyn Fn() -> bool, why: &dyn Fn() -> String) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "{what}\n{}", why());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs a VM (QEMU)"]
fn a_three_node_cluster_runs_the_seed_examples() {
    if let Some(why) = unavailable() {
        panic!("needs a VM: {why}");
    }
    let ws = workspace();
    // busybox and nginx for the cluster's registry, under Docker Hub's names.
    let imgs = std::env::temp_dir().join(format!("skiff-k8s-images-{}", std::process::id()));
    let o = Command::new(ws.join("scripts/images/cluster-images.sh"))
        .arg(&imgs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let mirrored: Vec<(std::path::PathBuf, String)> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (a, r) = l.split_once('=').unwrap();
            (a.into(), r.to_string())
        })
        .collect();
    assert_eq!(mirrored.len(), 4, "{mirrored:?}");
    let name = "skiff-k8s";
    let _ = Cluster::down(name);
    let (api_port, registry_port) = (free_port(), free_port());
    let opts = UpOptions {
        name: name.into(),
        nodes: 3,
        memory_mb: 768,
        cpus: 1,
        workspace: ws.clone(),
        agent_bin: binary("skiff-vm"),
        link_against: vec![binary("skiff-runtime"), binary("skiff-control")],
        accel: std::env::var("SKIFF_VM_ACCEL").unwrap_or_else(|_| "auto".into()),
        api_forwards: vec![api_port],
        registry_forward: Some(registry_port),
    };
    let t0 = Instant::now();
    let c = Cluster::up(&opts).expect("boot three VMs");
    let _down = Down(name.into());
    let form = skiff_vm::kubernetes::FormOptions {
        bin_dir: "/skiff/target/debug".into(),
        // Nothing imported by hand: every image is pulled through the mirror.
        images: vec![],
        api_ports: vec![api_port],
        // Node failure in minutes, not kube's 40 s + 300 s: leases renewed every 2 s,
        // stale after 20 s, pods tolerate an unreachable node for 5 s.
        control_args: "--node-monitor-grace-period 20s --default-unreachable-toleration-seconds 5"
            .into(),
        kubelet_args: "--node-lease-renew-interval 2".into(),
        mirror: Some(skiff_vm::kubernetes::Mirror {
            host_port: registry_port,
            images: mirrored,
        }),
    };
    let kc_text = skiff_vm::kubernetes::form(&c, &form).expect("form the cluster");
    let kc = c.dir.join("kubeconfig");
    assert_eq!(std::fs::read_to_string(&kc).unwrap(), kc_text);
    let kc = kc.to_str().unwrap().to_string();
    let k = |args: &[&str]| kubectl(&kc, args);
    let logs = |c: &Cluster| {
        tails(
            c,
            &["node-2", "node-3"],
            "/var/log/skiff/kubelet.log /var/log/skiff/proxy.log",
        )
    };
    let wait =
        |what: &str, secs: u64, f: &dyn Fn() -> bool| eventually(what, secs, f, &|| logs(&c));
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
        "busybox",
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
               containers:\n      - name: web\n        image: busybox\n        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www']\n        \
               ports: [{containerPort: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  \
               selector: {app: web}\n  ports: [{port: 80, targetPort: 80}]\n";
    apply(&kc, web);
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

    // Images as people type them: `nginx` is docker.io/library/nginx:latest, pulled by
    // the node through the cluster's mirror of docker.io.
    let (ok, out) = k(&["create", "deployment", "nginx", "--image=nginx"]);
    assert!(ok, "{out}");
    let (ok, out) = k(&["expose", "deployment", "nginx", "--port", "80"]);
    assert!(ok, "{out}");
    wait("the nginx pod Running", 240, &|| {
        k(&[
            "get",
            "pods",
            "-l",
            "app=nginx",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ])
        .1 == "Running"
    });
    let image = k(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "-o",
        "jsonpath={.items[0].status.containerStatuses[0].image}",
    ])
    .1;
    assert_eq!(image, "docker.io/library/nginx:latest");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = k(&[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "timeout 5 wget -qO- http://nginx/",
        ]);
        if ok && out.contains("Welcome to nginx") {
            break;
        }
        assert!(Instant::now() < end, "nginx by name: {out}\n{}", logs(&c));
        std::thread::sleep(Duration::from_millis(500));
    }

    // A crashed container restarts in place (same pod, restartCount up, last exit code).
    let (ok, out) = k(&[
        "run",
        "crash",
        "--image",
        "busybox",
        "--",
        "sh",
        "-c",
        "trap 'exit 3' TERM; while :; do sleep 1; done",
    ]);
    assert!(ok, "{out}");
    wait("the crash pod Running", 180, &|| {
        k(&["get", "pod", "crash", "-o", "jsonpath={.status.phase}"]).1 == "Running"
    });
    let uid = k(&["get", "pod", "crash", "-o", "jsonpath={.metadata.uid}"]).1;
    let (ok, out) = k(&["exec", "crash", "--", "kill", "1"]);
    assert!(ok, "{out}");
    wait("the crashed container restarted", 120, &|| {
        let st = k(&[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].ready}",
        ])
        .1;
        st == "1 3 true"
    });
    assert_eq!(
        k(&["get", "pod", "crash", "-o", "jsonpath={.metadata.uid}"]).1,
        uid,
        "restarted in place, not replaced"
    );

    // A deleted pod is replaced; scaling 3 → 5 reaches 5 Running.
    let running_web = || -> Vec<(String, String)> {
        let (_, out) = k(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[2] == "Running").then(|| (f[0].to_string(), f[1].to_string()))
            })
            .collect()
    };
    let victim = names.split_whitespace().next().unwrap().to_string();
    let (ok, out) = k(&["delete", "pod", &victim, "--wait=false"]);
    assert!(ok, "{out}");
    wait("the deleted web pod replaced", 180, &|| {
        let r = running_web();
        r.len() == 3 && r.iter().all(|(n, _)| *n != victim)
    });
    let (ok, out) = k(&["scale", "deployment", "web", "--replicas", "5"]);
    assert!(ok, "{out}");
    wait("5 web pods Running", 240, &|| running_web().len() == 5);

    // A worker loses power: the one without the shell pod, so the client survives.
    let dead = if shell_node == "node-2" {
        "node-3"
    } else {
        "node-2"
    };
    let alive = shell_node.clone();
    let on_dead = running_web().iter().filter(|(_, n)| n == dead).count();
    assert!(on_dead > 0, "some web pods on {dead}: {:?}", running_web());
    let t_kill = Instant::now();
    c.kill(dead).expect("kill the worker VM");
    wait("the dead node NotReady", 120, &|| {
        k(&["get", "node", dead]).1.contains("NotReady")
    });
    eprintln!(
        "{dead} NotReady {:.1} s after the kill",
        t_kill.elapsed().as_secs_f64()
    );
    wait("its pods recreated on the other worker", 240, &|| {
        let r = running_web();
        r.len() == 5 && r.iter().all(|(_, n)| *n == alive)
    });
    eprintln!(
        "5 web pods Running on {alive} {:.1} s after the kill",
        t_kill.elapsed().as_secs_f64()
    );
    // Once the Service's EndpointSlice names exactly the running pods as ready (the
    // dead node's are Terminating and not ready), it answers every time: only live
    // endpoints are behind it.
    wait(
        "the Service's ready endpoints are the running pods",
        120,
        &|| {
            let live: std::collections::BTreeSet<String> = k(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.status.podIP} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .1
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 2 && f[1] == "Running").then(|| f[0].to_string())
        })
        .collect();
            let ready: std::collections::BTreeSet<String> = k(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}",
            ])
            .1
            .split_whitespace()
            .filter_map(|e| e.strip_suffix("=true").map(str::to_string))
            .collect();
            live.len() == 5 && ready == live
        },
    );
    for i in 0..10 {
        let (ok, out) = k(&[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "timeout 5 wget -qO- http://web/",
        ]);
        assert!(ok, "request {i} with {dead} down: {out}\n{}", logs(&c));
    }

    // The machine comes back (fresh disks) and joins again under its name; the pods it
    // held, left Terminating while it was gone, are finished and removed.
    c.start(dead).expect("boot the worker again");
    skiff_vm::kubernetes::rejoin(&c, dead).expect("rejoin");
    wait("the node Ready again", 240, &|| {
        k(&["get", "node", dead]).1.contains(" Ready ")
    });
    wait("no pod left on the old node", 240, &|| {
        let (_, out) = k(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={dead}"),
            "-o",
            "name",
        ]);
        out.trim().is_empty()
    });
    eprintln!(
        "{dead} back and Ready {:.1} s after the kill",
        t_kill.elapsed().as_secs_f64()
    );
    // And it runs pods again: a pod pinned to it.
    let pinned = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: back}}\nspec:\n  nodeName: {dead}\n  \
         containers:\n  - name: c\n    image: busybox:1.35.0\n    command: [sleep, '3600']\n"
    );
    apply(&kc, &pinned);
    wait("a pod Running on the rejoined node", 180, &|| {
        k(&["get", "pod", "back", "-o", "jsonpath={.status.phase}"]).1 == "Running"
    });

    // Joining with a wrong token or a wrong CA pin is refused with the reason, and
    // nothing is written (from a worker VM, over the cluster network).
    let j: skiff_vm::kubernetes::JoinSpec =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("join.json")).unwrap()).unwrap();
    let wrong_token = format!("{}.0000000000000000", &j.token[..6]);
    let wrong_pin = format!("sha256:{}", "ab".repeat(32));
    for (token, pin, reason) in [
        (
            wrong_token.as_str(),
            j.ca_hash.as_str(),
            "the token was refused",
        ),
        (
            j.token.as_str(),
            wrong_pin.as_str(),
            "does not match --ca-cert-hash",
        ),
    ] {
        let r = c
            .exec(
                &alive,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "timeout 60 {}/skiff-kubelet --kubeconfig /tmp/intruder.kubeconfig --root-dir /tmp/intruder \
                         --hostname-override intruder --port 0 --server {} --token {token} --ca-cert-hash {pin} 2>&1; \
                         echo exit=$?; ls /tmp/intruder.kubeconfig 2>&1",
                        j.bin_dir, j.server
                    ),
                ],
                Duration::from_secs(90),
            )
            .unwrap();
        assert!(
            r.stdout.contains(reason)
                && !r.stdout.contains("exit=0")
                && !r.stdout.contains("exit=124")
                && r.stdout.contains("No such file"),
            "{reason}: {}",
            r.stdout
        );
    }
    let (_, nodes) = k(&["get", "nodes", "-o", "name"]);
    assert!(!nodes.contains("intruder"), "{nodes}");
}

/// Three control planes (node-1..3: a 3-member etcd over TLS with certificates from the
/// cluster CA, three skiff-control) and a worker that knows every API server. The VM
/// holding the scheduler's lease loses power: the others take the scheduler and
/// controller-manager leases over, kubectl against another API server works, and a new
/// Deployment is scheduled and runs on the worker (whose kubelet fails over).
#[test]
#[ignore = "needs a VM (QEMU)"]
fn three_control_planes_survive_losing_the_leader() {
    if let Some(why) = unavailable() {
        panic!("needs a VM: {why}");
    }
    let ws = workspace();
    let tar = ws.join("target/vm-images/busybox-ha.tar");
    std::fs::create_dir_all(tar.parent().unwrap()).unwrap();
    let o = Command::new(ws.join("scripts/images/busybox-oci.sh"))
        .arg(&tar)
        .env("LAYER_GZIP", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let name = "skiff-ha";
    let _ = Cluster::down(name);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let opts = UpOptions {
        name: name.into(),
        nodes: 4,
        memory_mb: 768,
        cpus: 1,
        workspace: ws.clone(),
        agent_bin: binary("skiff-vm"),
        link_against: vec![binary("skiff-runtime"), binary("skiff-control")],
        accel: std::env::var("SKIFF_VM_ACCEL").unwrap_or_else(|_| "auto".into()),
        api_forwards: ports.clone(),
        registry_forward: None,
    };
    let t0 = Instant::now();
    let c = Cluster::up(&opts).expect("boot four VMs");
    let _down = Down(name.into());
    let form = skiff_vm::kubernetes::FormOptions {
        bin_dir: "/skiff/target/debug".into(),
        images: vec!["/skiff/target/vm-images/busybox-ha.tar".into()],
        api_ports: ports,
        control_args: String::new(),
        kubelet_args: String::new(),
        mirror: None,
    };
    skiff_vm::kubernetes::form(&c, &form).expect("form the cluster");
    let kc = |i: usize| c.dir.join(format!("kubeconfig-{i}")).display().to_string();
    let k = |i: usize, args: &[&str]| kubectl(&kc(i), args);
    let logs = |c: &Cluster| {
        tails(
            c,
            &["node-1", "node-2", "node-3", "node-4"],
            "/var/log/skiff/control.log /var/log/skiff/etcd.log /var/log/skiff/kubelet.log",
        )
    };
    let wait =
        |what: &str, secs: u64, f: &dyn Fn() -> bool| eventually(what, secs, f, &|| logs(&c));
    wait("the worker Ready", 300, &|| {
        k(1, &["get", "node", "node-4"]).1.contains(" Ready ")
    });
    eprintln!(
        "boot to the worker Ready: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Every API server answers, from the one store.
    for i in 1..=3 {
        let (ok, out) = k(i, &["get", "nodes", "-o", "name"]);
        assert!(ok && out.contains("node/node-4"), "API server {i}: {out}");
    }
    let holder = |i: usize, lease: &str| -> Option<String> {
        let (ok, out) = k(
            i,
            &[
                "get",
                "lease",
                "-n",
                "kube-system",
                lease,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        ok.then(|| out.split('_').next().unwrap_or("").to_string())
            .filter(|h| !h.is_empty())
    };
    wait("a scheduler lease holder", 60, &|| {
        holder(1, "skiff-scheduler").is_some()
    });
    let leader = holder(1, "skiff-scheduler").unwrap();
    let idx: usize = leader
        .strip_prefix("node-")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=3).contains(n))
        .unwrap_or_else(|| panic!("the scheduler is held by {leader:?}, not a control plane"));
    let cm = holder(1, "skiff-controller-manager");
    eprintln!("scheduler lease: {leader}, controller-manager lease: {cm:?}");
    let other = if idx == 1 { 2 } else { 1 };

    let t_kill = Instant::now();
    c.kill(&leader).expect("kill the leader's VM");
    // Both leases move to a live control plane.
    wait("the leases taken over", 120, &|| {
        ["skiff-scheduler", "skiff-controller-manager"]
            .iter()
            .all(|l| holder(other, l).is_some_and(|h| h != leader))
    });
    eprintln!(
        "leases taken over {:.1} s after the kill",
        t_kill.elapsed().as_secs_f64()
    );
    // kubectl against another API server; a new Deployment scheduled and running.
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: after}\nspec:\n  replicas: 2\n  \
                  selector: {matchLabels: {app: after}}\n  template:\n    metadata: {labels: {app: after}}\n    spec:\n      \
                  containers:\n      - name: c\n        image: docker.io/skiff/busybox:latest\n        \
                  imagePullPolicy: IfNotPresent\n        command: [sleep, '3600']\n";
    apply(&kc(other), deploy);
    let running = || -> Vec<String> {
        let (_, out) = k(
            other,
            &[
                "get",
                "pods",
                "-l",
                "app=after",
                "-o",
                "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
            ],
        );
        out.lines().map(str::to_string).collect()
    };
    wait(
        "the new Deployment's pods Running on the worker",
        240,
        &|| {
            let r = running();
            r.len() == 2 && r.iter().all(|l| l == "node-4 Running")
        },
    );
    eprintln!(
        "a new Deployment Running {:.1} s after the kill",
        t_kill.elapsed().as_secs_f64()
    );
    // No duplicates from two controller managers: still exactly 2, a while later.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(running().len(), 2, "{:?}", running());
}
