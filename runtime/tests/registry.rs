//! Pulling from a real OCI distribution registry (Debian's docker-registry, the CNCF
//! distribution 2.8) started on loopback and filled with skopeo: gzip and zstd layers,
//! digest checks, progress, missing tags. A small loopback HTTP server checks the
//! bearer-token challenge flow. Needs root (for the image store's overlay-ready layers).

use common::registry::{build_image, Registry};
use common::*;
use skiff_fixtures as common;
use skiff_runtime::image::{PullOptions, Store};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

#[test]
#[ignore = "needs root, docker-registry and skopeo"]
fn pull_gzip_and_zstd_from_loopback_registry() {
    require_root();
    let reg = Registry::start()
        .expect("needs docker-registry and skopeo (apt-get install docker-registry skopeo)");
    let (gz, raw) = (reg.dir.join("gz.tar"), reg.dir.join("raw.tar"));
    build_image(&gz, true);
    build_image(&raw, false);
    reg.push(&gz, "skiff/busybox:v1", &[]);
    reg.push(
        &raw,
        "skiff/busybox-zstd:v1",
        &["--dest-compress-format", "zstd"],
    );

    let store = Store::open(reg.dir.join("store")).unwrap();
    let seen = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let s2 = seen.clone();
    let mut opts = PullOptions {
        insecure: true,
        progress: Some(Box::new(move |_, done, _| s2.set(s2.get().max(done)))),
        ..Default::default()
    };
    for repo in ["skiff/busybox:v1", "skiff/busybox-zstd:v1"] {
        let name = store
            .pull(&format!("127.0.0.1:{}/{repo}", reg.port), &mut opts)
            .unwrap();
        assert_eq!(name, format!("127.0.0.1:{}/{repo}", reg.port));
        let layers = store.layers(&name).unwrap();
        assert!(layers[0].join("bin/busybox").exists(), "{repo} unpacked");
        assert_eq!(store.config(&name).unwrap().argv(&[], &[]), ["sh"]);
    }
    assert!(seen.get() > 500_000, "progress reported the layer bytes");
    let zstd_manifest = store
        .read_json(
            &store
                .resolve(&format!("127.0.0.1:{}/skiff/busybox-zstd:v1", reg.port))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        zstd_manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    // Both images unpack to the same diff id, so they share one unpacked layer.
    let a = store
        .layers(&format!("127.0.0.1:{}/skiff/busybox:v1", reg.port))
        .unwrap();
    let b = store
        .layers(&format!("127.0.0.1:{}/skiff/busybox-zstd:v1", reg.port))
        .unwrap();
    assert_eq!(a, b);

    let e = store
        .pull(
            &format!("127.0.0.1:{}/skiff/busybox:nope", reg.port),
            &mut PullOptions {
                insecure: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("HTTP 404"), "{e}");
}

/// A registry that demands a bearer token: /v2 paths answer 401 with a challenge until
/// the request carries the token /token hands out; then blobs come from `layout`.
fn bearer_registry(
    layout: std::path::PathBuf,
    manifest: String,
) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut log = Vec::new();
        for _ in 0..8 {
            let Ok((mut s, _)) = l.accept() else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if h.to_ascii_lowercase().starts_with("authorization:") {
                    auth = h[14..].trim().to_string();
                }
            }
            log.push(format!("{path} {auth}"));
            let (status, ctype, body, extra) = if path.starts_with("/token") {
                (
                    200,
                    "application/json",
                    br#"{"token":"s3cret"}"#.to_vec(),
                    String::new(),
                )
            } else if auth != "Bearer s3cret" {
                (401, "application/json", b"{}".to_vec(), format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"mock\",scope=\"repository:img:pull\"\r\n"))
            } else if path.contains("/manifests/") {
                (
                    200,
                    "application/vnd.oci.image.manifest.v1+json",
                    std::fs::read(
                        layout
                            .join("blobs/sha256")
                            .join(manifest.trim_start_matches("sha256:")),
                    )
                    .unwrap(),
                    String::new(),
                )
            } else {
                let d = path
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .trim_start_matches("sha256:")
                    .to_string();
                (
                    200,
                    "application/octet-stream",
                    std::fs::read(layout.join("blobs/sha256").join(d)).unwrap(),
                    String::new(),
                )
            };
            let head = format!("HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
            if log.iter().filter(|l| l.contains("/blobs/")).count() == 2 {
                break;
            }
        }
        log
    });
    (port, h)
}

#[test]
#[ignore = "needs root"]
fn bearer_token_challenge() {
    require_root();
    let dir = std::env::temp_dir().join(unique("skiff-bearer"));
    std::fs::create_dir_all(dir.join("layout")).unwrap();
    build_image(&dir.join("img.tar"), true);
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(dir.join("img.tar"))
        .arg("-C")
        .arg(dir.join("layout"))
        .status()
        .unwrap()
        .success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("layout/index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (port, server) = bearer_registry(dir.join("layout"), manifest);
    let store = Store::open(dir.join("store")).unwrap();
    let name = store
        .pull(
            &format!("127.0.0.1:{port}/img:t"),
            &mut PullOptions {
                insecure: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(store.layers(&name).unwrap()[0].join("bin/busybox").exists());
    let log = server.join().unwrap();
    assert_eq!(
        log[0], "/v2/img/manifests/t ",
        "first try without credentials: {log:?}"
    );
    assert!(
        log[1].starts_with("/token?scope=repository:img:pull&service=mock"),
        "{log:?}"
    );
    assert!(
        log[2..].iter().all(|l| l.ends_with("Bearer s3cret")),
        "{log:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Registry mirrors, as containerd's: the mirror is tried first and the image keeps its
/// own name (`busybox:1.0` is `docker.io/library/busybox:1.0`, served by a loopback
/// mirror: the real docker.io is never contacted); a mirror that fails or lacks the
/// image falls back to the registry, and when both fail the error names each.
#[test]
#[ignore = "needs root, docker-registry and skopeo"]
fn registry_mirrors_first_then_the_registry() {
    require_root();
    let reg = Registry::start()
        .expect("needs docker-registry and skopeo (apt-get install docker-registry skopeo)");
    let tar = reg.dir.join("bb.tar");
    build_image(&tar, true);
    reg.push(&tar, "library/busybox:1.0", &[]);
    reg.push(&tar, "skiff/busybox:v1", &[]);
    let store = Store::open(reg.dir.join("store")).unwrap();
    let mirror = format!("http://127.0.0.1:{}", reg.port);
    // Through the mirror, under the name the user typed.
    let name = store
        .pull(
            "busybox:1.0",
            &mut PullOptions {
                mirrors: vec![mirror.clone()],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(name, "docker.io/library/busybox:1.0");
    assert!(store.layers(&name).unwrap()[0].join("bin/busybox").exists());
    // A dead mirror (a closed loopback port): the registry itself answers.
    let upstream = format!("127.0.0.1:{}/skiff/busybox:v1", reg.port);
    let name = store
        .pull(
            &upstream,
            &mut PullOptions {
                insecure: true,
                mirrors: vec!["http://127.0.0.1:9".into()],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(name, upstream);
    // Missing in the mirror, and the registry (a closed loopback port) unreachable:
    // the error says what each answered.
    let e = store
        .pull(
            "127.0.0.1:9/skiff/nothing:1",
            &mut PullOptions {
                insecure: true,
                mirrors: vec![mirror.clone()],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("mirror {mirror}"))
            && e.contains("HTTP 404")
            && e.contains("registry http://127.0.0.1:9"),
        "{e}"
    );
}
