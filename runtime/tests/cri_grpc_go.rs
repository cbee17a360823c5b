//! The CRI wire as crictl speaks it: a Go client on grpc-go (Debian's
//! golang-google-grpc-dev, the gRPC stack crictl is built on) with stubs generated from
//! the upstream runtime.v1 api.proto (the k8s-cri crate's copy), driving a pod and a
//! container through the calls crictl's commands make, events included. The crictl
//! binary itself cannot be installed here. Needs root.

use common::node::Node;
use common::*;
use skiff_fixtures as common;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Go pieces, or why they are missing.
fn go_toolchain() -> Result<(), String> {
    for tool in ["go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "{tool} is not installed (scripts/setup.sh installs it)"
            ));
        }
    }
    if !Path::new("/usr/share/gocode/src/google.golang.org/grpc").exists() {
        return Err("grpc-go is not installed (apt-get install golang-google-grpc-dev)".into());
    }
    Ok(())
}

/// The api.proto the CRI server is built from: in cargo's sources of the k8s-cri
/// version Cargo.lock names.
fn api_proto() -> PathBuf {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"))
        .unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"k8s-cri\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .expect("k8s-cri in Cargo.lock");
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    std::fs::read_dir(home.join("registry/src"))
        .unwrap()
        .flatten()
        .map(|d| d.path().join(format!("k8s-cri-{version}/proto/v1.proto")))
        .find(|p| p.exists())
        .expect("the k8s-cri sources in cargo's registry")
}

/// Generate the stubs and build `criwire` in a GOPATH of its own.
fn build_client(work: &Path) -> PathBuf {
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let proto = api_proto();
    let o = Command::new("protoc")
        .arg("-I")
        .arg(proto.parent().unwrap())
        .arg(format!("--go_out={}", src.display()))
        .arg(format!("--go-grpc_out={}", src.display()))
        .arg(proto.file_name().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "protoc: {o:?}");
    let pkg = src.join("skiff/criwire");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/criwire/main.go"),
        pkg.join("main.go"),
    )
    .unwrap();
    let bin = work.join("criwire");
    // Debian's Go libraries are a GOPATH tree; no module downloads.
    let o = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("skiff/criwire")
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", work.display()))
        .env("GOFLAGS", "")
        .env("GOCACHE", std::env::temp_dir().join("skiff-go-cache"))
        .output()
        .unwrap();
    assert!(o.status.success(), "go build: {o:?}");
    bin
}

#[test]
#[ignore = "needs root, Go and Debian's gRPC Go libraries"]
fn grpc_go_client_drives_the_cri_server_like_crictl() {
    require_root();
    if let Err(why) = go_toolchain() {
        panic!("needs {why}");
    }
    let node = Node::start(false);
    node.import_busybox();
    let work = node.root.join("go");
    let bin = build_client(&work);
    // As crictl ≥ 1.26 dials (":authority: localhost"), then as older clients do (the
    // socket path there, which h2 alone would refuse).
    for authority in ["localhost", "socket-path"] {
        drive(&node, &bin, authority);
    }
}

fn drive(node: &Node, bin: &Path, authority: &str) {
    let logs = node.root.join(format!("logs/gowire-{authority}"));
    let o = Command::new(bin)
        .arg(node.sock())
        .arg("docker.io/skiff/busybox:latest")
        .arg(&logs)
        .arg(authority)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "criwire ({authority}): {}\nserver log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(node.root.join("server.log")).unwrap_or_default()
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runtimeApiVersion"], "v1", "{v:#}");
    assert_eq!(v["runtimeName"], "skiff", "{v:#}");
    assert_eq!(v["conditions"]["RuntimeReady"], true, "{v:#}");
    assert!(
        v["images"]
            .as_array()
            .unwrap()
            .contains(&"docker.io/skiff/busybox:latest".into()),
        "{v:#}"
    );
    assert_eq!(v["imageFound"], true);
    assert_eq!(v["absentImageIsNil"], true);
    assert_eq!(v["imageFilesystems"], 1);
    assert_eq!(v["podState"], "SANDBOX_READY");
    assert_eq!(v["podAnnotation"], "from grpc-go");
    assert_eq!(v["podsListed"], 1);
    assert_eq!(v["containersListed"], 1);
    assert_eq!(v["containerState"], "CONTAINER_RUNNING");
    assert!(
        v["containerInfo"]
            .as_array()
            .unwrap()
            .contains(&"info".into()),
        "verbose status carries crictl's info: {v:#}"
    );
    assert_eq!(v["execSync"]["stdout"], "out\n");
    assert_eq!(v["execSync"]["stderr"], "err\n");
    assert_eq!(v["execSync"]["exitCode"], 3);
    assert!(
        v["execUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{v:#}"
    );
    assert_eq!(v["statsFor"], true);
    assert!(v["statsListed"].as_u64().unwrap() >= 1, "{v:#}");
    assert!(v["podStatsListed"].as_u64().unwrap() >= 1, "{v:#}");
    assert_eq!(v["stoppedState"], "CONTAINER_EXITED");
    assert_eq!(v["removedContainerCode"], "NotFound");
    assert_eq!(v["podsLeft"], 0);
    // Events, as `crictl events` streams them: every step of the container and the pod,
    // in order, and the exit of a container that ended by itself.
    let lifecycle = [
        "CONTAINER_CREATED_EVENT",
        "CONTAINER_STARTED_EVENT",
        "CONTAINER_STOPPED_EVENT",
        "CONTAINER_DELETED_EVENT",
    ];
    assert_eq!(v["containerEvents"], serde_json::json!(lifecycle), "{v:#}");
    assert_eq!(v["podEvents"], serde_json::json!(lifecycle), "{v:#}");
    assert_eq!(v["quickEvents"], serde_json::json!(lifecycle[..3]), "{v:#}");
    // The container's output reached its CRI log.
    let log = std::fs::read_to_string(logs.join("c.log")).unwrap();
    assert!(log.contains(" stdout F hello-from-go"), "{log}");
}
