//! The real kubectl's exec, attach, cp and port-forward reach a container along the path a cluster
//! uses: kubectl → skiff-control (HTTPS, pods/exec and pods/portforward) → the node's
//! kubelet endpoint → the CRI streaming server → the container. kubectl 1.27 speaks
//! SPDY/3.1; kubectl 1.32 speaks WebSocket, and for port-forward SPDY tunnelled in
//! WebSocket. The kubelet is a stand-in that does only what the kubelet's streaming
//! handlers do: ask the CRI for a URL, send the upgrade there, splice. Needs root.

use skiff_fixtures as common;

use common::node::{busybox, Node, RUNNING};
use common::*;
use skiff_fixtures::process::{kubectl, Control};
use skiff_runtime::cri::v1;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const KUBECTL_SPDY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL_WEBSOCKET: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

#[test]
#[ignore = "needs root, kubectl 1.27 and 1.32"]
fn kubectl_exec_attach_and_port_forward_over_spdy_and_websocket() {
    require_root();
    for k in [KUBECTL_SPDY, KUBECTL_WEBSOCKET] {
        assert!(Path::new(k).exists(), "needs {k}");
    }
    let node = Node::start(false);
    node.import_busybox();
    let (pod, ctr) = node.run(
        "web",
        &busybox("c", "echo pf-ok > /tmp/i.html; exec httpd -f -p 80 -h /tmp"),
    );
    node.wait_state(&ctr, RUNNING);
    // One container per kubectl to attach to (attach ends it by closing its stdin).
    let mut containers = HashMap::from([("c".to_string(), ctr)]);
    for name in ["echo0", "echo1"] {
        let mut cfg = busybox(
            name,
            "echo started; while read l; do echo got:$l; done; echo eof",
        );
        cfg["stdin"] = serde_json::json!(true);
        let id = node.container(&pod, "web", &cfg);
        node.wait_state(&id, RUNNING);
        containers.insert(name.to_string(), id);
    }

    let dir = std::env::temp_dir().join(unique("skiff-kstream"));
    std::fs::create_dir_all(&dir).unwrap();
    let control = Control::start(&dir, &[]);
    let kc = control.kubeconfig("admin.kubeconfig");
    let kc = kc.to_str().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = stand_in_kubelet(
        dir.join("pki"),
        node.sock(),
        (pod, containers),
        seen.clone(),
    );
    let node_yaml = format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nstatus:\n  addresses: [{{type: InternalIP, address: 127.0.0.1}}]\n  daemonEndpoints:\n    kubeletEndpoint: {{Port: {port}}}\n");
    let pod_yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: n1\n  containers:\n  - {name: c, image: busybox}\n  - {name: echo0, image: busybox, stdin: true}\n  - {name: echo1, image: busybox, stdin: true}\n";
    for m in [node_yaml.as_str(), pod_yaml] {
        let o = kubectl(&["--kubeconfig", kc, "apply", "-f", "-"], Some(m));
        assert!(o.status.success(), "{o:?}");
    }
    // port-forward wants a running pod; the kubelet would report it.
    let o = kubectl(
        &[
            "--kubeconfig",
            kc,
            "patch",
            "pod",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");

    for (i, k) in [KUBECTL_SPDY, KUBECTL_WEBSOCKET].into_iter().enumerate() {
        // attach -i: our lines reach the container's stdin, its answers come back, and
        // closing stdin ends its loop.
        let mut attach = Command::new(k);
        attach.args([
            "--kubeconfig",
            kc,
            "attach",
            "-i",
            "web",
            "-c",
            &format!("echo{i}"),
        ]);
        let o = output_with_input(attach, b"x\ny\n".to_vec());
        assert!(o.status.success(), "{k}: {o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "got:x\ngot:y\neof\n",
            "{k}: {o:?}"
        );

        // exec -i: stdin in, stdout and stderr apart, the exit code out.
        let mut exec = Command::new(k);
        exec.args(["--kubeconfig", kc, "exec", "-i", "web", "-c", "c", "--"])
            .args(["sh", "-c", "cat; echo to-err >&2; exit 3"]);
        let o = output_with_input(exec, b"one\ntwo\n");
        assert_eq!(o.status.code(), Some(3), "{k}: {o:?}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "one\ntwo\n", "{k}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("to-err"),
            "{k}: {o:?}"
        );
        // Bulk both ways: 2 MiB in through cat and back.
        let big: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut exec = Command::new(k);
        exec.args([
            "--kubeconfig",
            kc,
            "exec",
            "-i",
            "web",
            "-c",
            "c",
            "--",
            "cat",
        ]);
        let o = output_with_input(exec, big.clone());
        assert!(
            o.stdout == big,
            "{k}: {} of {} bytes",
            o.stdout.len(),
            big.len()
        );

        // port-forward: a local port reaches httpd on port 80 inside the pod.
        let mut cmd = Command::new(k);
        cmd.args(["--kubeconfig", kc, "port-forward", "pod/web", ":80"]);
        let (mut pf, local) = forwarding_port(cmd);
        // Several connections at once share kubectl's one streaming connection.
        let answers: Vec<String> = (0..8)
            .map(|_| std::thread::spawn(move || http_get(local, "/i.html")))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        for r in answers {
            assert!(
                r.starts_with("HTTP/1.") && r.ends_with("pf-ok\n"),
                "{k}: {r:?}"
            );
        }
        let _ = pf.kill();
        let _ = pf.wait();

        // kubectl cp: tar over exec, into the container and back.
        let local_file = dir.join(format!("cp-{i}.txt"));
        std::fs::write(&local_file, format!("copied by {k}\n")).unwrap();
        let target = format!("web:/tmp/cp-{i}.txt");
        let o = Command::new(k)
            .args(["--kubeconfig", kc, "cp", "-c", "c"])
            .arg(&local_file)
            .arg(&target)
            .output()
            .unwrap();
        assert!(o.status.success(), "{k}: {o:?}");
        let back = dir.join(format!("back-{i}.txt"));
        let o = Command::new(k)
            .args(["--kubeconfig", kc, "cp", "-c", "c", &target])
            .arg(&back)
            .output()
            .unwrap();
        assert!(o.status.success(), "{k}: {o:?}");
        assert_eq!(
            std::fs::read_to_string(&back).unwrap(),
            format!("copied by {k}\n")
        );
    }
    // Each kind went through on the transport its kubectl speaks, with no fallback:
    // one SPDY port-forward connection (1.27's, carrying every local connection) and
    // one tunnelled in WebSocket (1.32's). exec includes kubectl cp's.
    let seen = seen.lock().unwrap().clone();
    let mut kinds = seen.clone();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "attach SPDY/3.1",
            "attach websocket",
            "exec SPDY/3.1",
            "exec websocket",
            "portForward SPDY/3.1",
            "portForward websocket"
        ],
    );
    for pf in ["portForward SPDY/3.1", "portForward websocket"] {
        assert_eq!(seen.iter().filter(|s| *s == pf).count(), 1, "{seen:?}");
    }
    drop(control);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Listen with the cluster's serving certificate; return the port.
fn stand_in_kubelet(
    pki_dir: PathBuf,
    sock: PathBuf,
    ids: (String, HashMap<String, String>),
    seen: Arc<Mutex<Vec<String>>>,
) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let pki = skiff_control::pki::Pki::ensure(&pki_dir, &[]).unwrap();
            let cfg = skiff_control::apiserver::tls::server_config(&pki).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            while let Ok((tcp, _)) = l.accept().await {
                let (acceptor, sock, ids, seen) =
                    (acceptor.clone(), sock.clone(), ids.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        if let Err(e) = splice(tls, &sock, &ids, &seen).await {
                            eprintln!("stand-in kubelet: {e:#}");
                        }
                    }
                });
            }
        });
    });
    rx.recv().unwrap()
}

async fn splice(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    sock: &Path,
    (pod, containers): &(String, HashMap<String, String>),
    seen: &Mutex<Vec<String>>,
) -> anyhow::Result<()> {
    let mut io = tokio::io::BufReader::new(tls);
    let mut line = String::new();
    io.read_line(&mut line).await?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if io.read_line(&mut l).await? == 0 || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let q: Vec<(&str, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, skiff_control::apiserver::percent_decode(v)))
        .collect();
    let on = |name: &str| q.iter().any(|(k, v)| *k == name && v == "1");
    let mut rt = v1::runtime_service_client::RuntimeServiceClient::new(channel(sock).await?);
    // /exec|attach/{namespace}/{pod}/{container}
    let ctr = path
        .rsplit('/')
        .next()
        .and_then(|name| containers.get(name))
        .cloned()
        .unwrap_or_default();
    let url = if path.starts_with("/exec/") {
        let cmd = q
            .iter()
            .filter(|(k, _)| *k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        let req = v1::ExecRequest {
            container_id: ctr.clone(),
            cmd,
            tty: on("tty"),
            stdin: on("input"),
            stdout: on("output"),
            stderr: on("error"),
        };
        rt.exec(req).await?.into_inner().url
    } else if path.starts_with("/attach/") {
        let req = v1::AttachRequest {
            container_id: ctr.clone(),
            tty: on("tty"),
            stdin: on("input"),
            stdout: on("output"),
            stderr: on("error"),
        };
        rt.attach(req).await?.into_inner().url
    } else if path.starts_with("/portForward/") {
        let req = v1::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: Vec::new(),
        };
        rt.port_forward(req).await?.into_inner().url
    } else {
        anyhow::bail!("the stand-in serves exec, attach and portForward only, not {path}");
    };
    let upgrade = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("upgrade"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let kind = path.split('/').nth(1).unwrap_or("");
    seen.lock().unwrap().push(format!("{kind} {upgrade}"));
    let rest = url.strip_prefix("http://").unwrap_or(&url);
    let (hostport, upath) = rest.split_once('/').unwrap_or((rest, ""));
    let mut up = tokio::net::TcpStream::connect(hostport).await?;
    let mut req = format!("GET /{upath} HTTP/1.1\r\nHost: {hostport}\r\n");
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
    {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    up.write_all(req.as_bytes()).await?;
    // Either side may end without ceremony (TLS close_notify): not an error here.
    let _ = tokio::io::copy_bidirectional(&mut io, &mut up).await;
    Ok(())
}

async fn channel(sock: &Path) -> anyhow::Result<tonic::transport::Channel> {
    let p = sock.to_path_buf();
    Ok(tonic::transport::Endpoint::try_from("http://[::1]:50051")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await?)
}
