//! skiff-cni driven exactly as a container runtime drives a CNI plugin, entirely inside
//! network namespaces this test creates: a "node" namespace holding the bridge and one
//! namespace per pod. Needs root, iproute2 and nftables.

use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static N: AtomicUsize = AtomicUsize::new(0);

/// These tests are `#[ignore = "needs root, ip, nft and busybox"]`: once asked for, an
/// unmet need is a failure.
fn require() {
    assert!(unsafe { libc::geteuid() } == 0, "needs root");
    for tool in ["ip", "nft", "busybox"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "needs {tool}"
        );
    }
}

/// Network namespaces and a data dir owned by one test; removed on drop.
struct Lab {
    tag: String,
    netns: Vec<String>,
    data: std::path::PathBuf,
    /// What the last call wrote on stderr (its log).
    stderr: std::cell::RefCell<String>,
}

impl Lab {
    fn new() -> Lab {
        let tag = format!(
            "{:x}{}",
            std::process::id() % 0xffff,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let data = std::env::temp_dir().join(format!("skiff-cni-{tag}"));
        let mut l = Lab {
            tag,
            netns: Vec::new(),
            data,
            stderr: Default::default(),
        };
        l.netns("node");
        l
    }

    fn netns(&mut self, name: &str) -> String {
        let full = format!("sk{name}{}", self.tag);
        assert!(Command::new("ip")
            .args(["netns", "add", &full])
            .status()
            .unwrap()
            .success());
        self.netns.push(full.clone());
        full
    }

    fn node(&self) -> &str {
        &self.netns[0]
    }

    fn conf(&self, subnet: &str) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": format!("net{}", self.tag), "type": "skiff-cni",
            "bridge": format!("skb{}", self.tag),
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.data}
        })
    }

    /// Run the plugin in the node namespace with CNI_* set.
    fn cni(&self, cmd: &str, conf: &Value, cid: &str, netns: Option<&str>) -> (i32, Value) {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            self.node(),
            env!("CARGO_BIN_EXE_skiff-cni"),
        ]);
        c.env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin");
        if let Some(ns) = netns {
            c.env("CNI_NETNS", format!("/run/netns/{ns}"));
        } else {
            c.env_remove("CNI_NETNS");
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let o: Output = child.wait_with_output().unwrap();
        *self.stderr.borrow_mut() = String::from_utf8_lossy(&o.stderr).into_owned();
        let out = String::from_utf8_lossy(&o.stdout);
        let v = if out.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
        };
        (o.status.code().unwrap_or(-1), v)
    }

    fn in_ns(&self, ns: &str, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", cmd])
            .output()
            .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[test]
fn version_reports_supported_versions() {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-cni"))
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions = v["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&json!("1.0.0")) && versions.contains(&json!("0.4.0")));
}

#[test]
#[ignore = "needs root, ip, nft and busybox"]
fn add_check_del_and_pods_talk() {
    require();
    let mut lab = Lab::new();
    let (p1, p2) = (lab.netns("p1"), lab.netns("p2"));
    let conf = lab.conf("10.123.0.0/24");
    let (code, r1) = lab.cni("ADD", &conf, "pod-one", Some(&p1));
    assert_eq!(code, 0, "{r1}");
    assert_eq!(r1["ips"][0]["address"], "10.123.0.2/24");
    assert_eq!(r1["ips"][0]["gateway"], "10.123.0.1");
    assert_eq!(r1["interfaces"][2]["name"], "eth0");
    assert_eq!(r1["interfaces"][2]["sandbox"], format!("/run/netns/{p1}"));
    let (code, r2) = lab.cni("ADD", &conf, "pod-two", Some(&p2));
    assert_eq!(code, 0, "{r2}");
    assert_eq!(r2["ips"][0]["address"], "10.123.0.3/24");

    // The pod sees its address and a default route through the bridge.
    let o = lab.in_ns(&p1, "ip -4 addr show eth0; ip route");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("10.123.0.2/24") && text.contains("default via 10.123.0.1"),
        "{text}"
    );
    // Two pods reach each other by IP; a pod reaches its gateway on the node.
    assert!(lab
        .in_ns(&p1, "busybox ping -c 1 -W 3 10.123.0.3")
        .status
        .success());
    assert!(lab
        .in_ns(&p2, "busybox ping -c 1 -W 3 10.123.0.1")
        .status
        .success());
    // Hairpin mode is on for the pod's bridge port.
    let host_if = r1["interfaces"][1]["name"].as_str().unwrap();
    let hp = std::fs::read_to_string(format!("/sys/class/net/{host_if}/brport/hairpin_mode"));
    let o = lab.in_ns(
        lab.node(),
        &format!("cat /sys/class/net/{host_if}/brport/hairpin_mode"),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1", "{hp:?}");
    // Masquerade for traffic leaving the pod network, in the node namespace only.
    let o = lab.in_ns(lab.node(), "nft list table ip skiff-cni");
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("ip saddr 10.123.0.0/24 ip daddr != 10.123.0.0/24 masquerade"));

    assert_eq!(lab.cni("CHECK", &conf, "pod-one", Some(&p1)).0, 0);
    // A repeated ADD returns the same address.
    let (code, again) = lab.cni("ADD", &conf, "pod-one", Some(&p1));
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["ips"][0]["address"], "10.123.0.2/24");

    assert_eq!(lab.cni("DEL", &conf, "pod-one", Some(&p1)).0, 0);
    assert!(
        !lab.in_ns(&p1, "ip link show eth0").status.success(),
        "eth0 removed"
    );
    assert_eq!(
        lab.cni("DEL", &conf, "pod-one", Some(&p1)).0,
        0,
        "DEL is idempotent"
    );
    let (code, err) = lab.cni("CHECK", &conf, "pod-one", Some(&p1));
    assert_eq!((code, err["code"].as_u64()), (1, Some(3)), "{err}");
    // DEL without the netns (already gone) still frees the address.
    assert_eq!(lab.cni("DEL", &conf, "pod-two", None).0, 0);
    let (_, r3) = lab.cni("ADD", &conf, "pod-three", Some(&p1));
    assert_eq!(
        r3["ips"][0]["address"], "10.123.0.4/24",
        "round robin, freed addresses come back later"
    );
    assert_eq!(lab.cni("STATUS", &conf, "", None).0, 0);
}

#[test]
#[ignore = "needs root, ip, nft and busybox"]
fn errors_follow_the_spec() {
    require();
    let mut lab = Lab::new();
    let p = lab.netns("p");
    let (code, e) = lab.cni("ADD", &json!({"cniVersion": "1.0.0"}), "x", Some(&p));
    assert_eq!(
        (code, e["code"].as_u64()),
        (1, Some(6)),
        "undecodable config: {e}"
    );
    let mut old = lab.conf("10.124.0.0/24");
    old["cniVersion"] = json!("0.1.0");
    assert_eq!(lab.cni("ADD", &old, "x", Some(&p)).1["code"], 1);
    let conf = lab.conf("10.124.0.0/24");
    let (code, e) = lab.cni("ADD", &conf, "x", None);
    assert_eq!(
        (code, e["code"].as_u64()),
        (1, Some(4)),
        "missing CNI_NETNS: {e}"
    );
    let (_, e) = lab.cni("ADD", &conf, "x", Some("no-such-netns"));
    assert_eq!(e["code"], 3, "unknown netns: {e}");
    // The failure is logged too, with the container it was for.
    let log = lab.stderr.borrow().clone();
    assert!(
        log.contains("skiff-cni failed")
            && log.contains("container=x")
            && log.contains("command=ADD"),
        "{log}"
    );
    // Exhaustion: a /30 has one pod address.
    let tiny = lab.conf("10.125.0.0/30");
    assert_eq!(lab.cni("ADD", &tiny, "a", Some(&p)).0, 0);
    let p2 = lab.netns("q");
    let (code, e) = lab.cni("ADD", &tiny, "b", Some(&p2));
    assert_eq!((code, e["code"].as_u64()), (1, Some(110)), "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("no IP addresses available"),
        "{e}"
    );
    assert!(
        !lab.in_ns(&p2, "ip link show eth0").status.success(),
        "nothing half-made on failure"
    );
    // GC frees attachments that are not listed as valid.
    let mut gc = tiny.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(lab.cni("GC", &gc, "", None).0, 0);
    let p3 = lab.netns("r");
    assert_eq!(
        lab.cni("ADD", &tiny, "c", Some(&p3)).0,
        0,
        "address freed by GC is usable"
    );
}

#[test]
#[ignore = "needs root, ip, nft and busybox"]
fn port_mappings_forward_host_ports_until_del() {
    require();
    let mut lab = Lab::new();
    let (p1, p2) = (lab.netns("pm1"), lab.netns("pm2"));
    let mut conf = lab.conf("10.124.0.0/24");
    conf["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 15353, "containerPort": 53, "protocol": "udp"}
    ]});
    let (code, r) = lab.cni("ADD", &conf, "web", Some(&p1));
    assert_eq!(code, 0, "{r}");
    let mut other = lab.conf("10.124.0.0/24");
    other["runtimeConfig"] = json!({"portMappings": [{"hostPort": 18081, "containerPort": 80}]});
    assert_eq!(lab.cni("ADD", &other, "web2", Some(&p2)).0, 0);
    // A server in the pod; the node reaches it at its own address on the host port.
    let mut srv = Command::new("ip")
        .args([
            "netns",
            "exec",
            &p1,
            "busybox",
            "nc",
            "-l",
            "-p",
            "80",
            "-e",
            "echo",
            "via-hostport",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = String::new();
    for _ in 0..50 {
        let o = lab.in_ns(lab.node(), "busybox nc -w 2 10.124.0.1 18080 </dev/null");
        got = String::from_utf8_lossy(&o.stdout).to_string();
        if got.contains("via-hostport") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(got.contains("via-hostport"), "{got:?}");
    let table = || {
        String::from_utf8_lossy(&lab.in_ns(lab.node(), "nft list table ip skiff-cni").stdout)
            .to_string()
    };
    let t = table();
    assert!(
        t.contains("18080 : 10.124.0.2 . 80") && t.contains("15353 : 10.124.0.2 . 53"),
        "{t}"
    );
    // DEL removes this pod's ports only.
    assert_eq!(lab.cni("DEL", &conf, "web", Some(&p1)).0, 0);
    let t = table();
    assert!(
        !t.contains("18080") && !t.contains("15353") && t.contains("18081 : 10.124.0.3 . 80"),
        "{t}"
    );
    // An unsupported protocol is a clear error, and nothing is left allocated.
    let mut bad = lab.conf("10.124.0.0/24");
    bad["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "sctp"}]});
    let (code, err) = lab.cni("ADD", &bad, "bad", Some(&p1));
    assert_ne!(code, 0);
    assert!(err["msg"].as_str().unwrap_or("").contains("sctp"), "{err}");
    assert!(
        !lab.in_ns(&p1, "ip link show eth0").status.success(),
        "no interface left behind"
    );
}
