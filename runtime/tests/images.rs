//! The image store: OCI layout and docker-archive import, digest verification, layers
//! unpacked once and stacked with overlayfs (whiteouts, opaque dirs), flattening, the
//! image config as container defaults, removal and GC. Needs root (overlay mounts).

use common::*;
use serde_json::json;
use sha2::Digest;
use skiff_fixtures as common;
use skiff_runtime::image::Store;
use std::path::Path;

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let (kind, mode, d): (_, _, &[u8]) = match data {
            Some(d) => (tar::EntryType::Regular, 0o644, d),
            None => (tar::EntryType::Directory, 0o755, &[]),
        };
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(d.len() as u64);
        b.append_data(&mut h, path, d).unwrap();
    }
    b.into_inner().unwrap()
}

fn overlay(lowers: &[std::path::PathBuf], at: &Path) -> std::path::PathBuf {
    let (upper, work, merged) = (at.join("upper"), at.join("work"), at.join("merged"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    // overlayfs wants the top layer first.
    let lower = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    merged
}

#[test]
#[ignore = "needs root"]
fn busybox_archive_runs_on_overlay() {
    require_root();
    let dir = std::env::temp_dir().join(unique("skiff-img"));
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/images/busybox-oci.sh");
    assert!(std::process::Command::new(&script)
        .arg(&archive)
        .output()
        .unwrap()
        .status
        .success());
    let store = Store::open(dir.join("store")).unwrap();
    let names = store.import_archive(&archive, None).unwrap();
    assert_eq!(names, ["docker.io/skiff/busybox:latest"]);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].digest.starts_with("sha256:") && list[0].size > 500_000);
    let cfg = store.config("docker.io/skiff/busybox:latest").unwrap();
    assert_eq!(cfg.argv(&[], &[]), ["sh"]);
    let layers = store.layers("docker.io/skiff/busybox:latest").unwrap();
    assert_eq!(layers.len(), 1);
    assert!(layers[0].join("bin/busybox").exists());
    // Importing again reuses the blobs and the unpacked layer.
    store.import_archive(&archive, None).unwrap();
    assert_eq!(
        store.layers("docker.io/skiff/busybox:latest").unwrap(),
        layers
    );

    // A container on an overlay of the image's layers, with the image's defaults.
    let rootfs = overlay(&layers, &dir.join("ov"));
    let mut b = Bundle::new(&["true"]);
    b.config["root"]["path"] = json!(rootfs);
    b.config["process"]["args"] = json!(cfg.argv(
        &["sh".into(), "-c".into()],
        &["echo from-image; touch /tmp/written".into()]
    ));
    b.config["process"]["env"] = json!(cfg.env());
    b.config["process"]["cwd"] = json!(cfg.working_dir());
    b.config["root"]["readonly"] = json!(false);
    b.save();
    let cli = Cli::new();
    let (code, out, err) = cli.run_bundle(&unique("img"), &b);
    assert_eq!((code, out.as_str()), (0, "from-image\n"), "{err}");
    assert!(
        dir.join("ov/upper/tmp/written").exists(),
        "writes land in the upper dir"
    );
    assert!(
        !layers[0].join("tmp/written").exists(),
        "the shared layer is untouched"
    );
    nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).unwrap();

    // A corrupted blob is refused by digest.
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    assert!(std::process::Command::new("tar")
        .args([
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            bad.to_str().unwrap()
        ])
        .status()
        .unwrap()
        .success());
    let cfg_blob = std::fs::read_dir(bad.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .find(|e| e.metadata().unwrap().len() < 2000)
        .unwrap()
        .path();
    std::fs::write(&cfg_blob, b"{\"tampered\": true}").unwrap();
    let bad_tar = dir.join("bad.tar");
    assert!(std::process::Command::new("tar")
        .args([
            "-cf",
            bad_tar.to_str().unwrap(),
            "-C",
            bad.to_str().unwrap(),
            "."
        ])
        .status()
        .unwrap()
        .success());
    let other = Store::open(dir.join("store2")).unwrap();
    let e = other
        .import_archive(&bad_tar, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("digest mismatch"), "{e}");
    assert!(other.list().unwrap().is_empty(), "nothing half-imported");

    store.remove("docker.io/skiff/busybox:latest").unwrap();
    assert!(
        store.gc().unwrap() >= 4,
        "manifest, config, layer blob and unpacked layer go"
    );
    assert!(!layers[0].exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs root"]
fn whiteouts_and_opaque_dirs_across_layers() {
    require_root();
    let dir = std::env::temp_dir().join(unique("skiff-wh"));
    let store = Store::open(dir.join("store")).unwrap();
    let l1 = layer(&[
        ("etc/", None),
        ("etc/keep", Some(b"k")),
        ("etc/gone", Some(b"g")),
        ("data/", None),
        ("data/old", Some(b"o")),
    ]);
    let l2 = layer(&[
        ("etc/.wh.gone", Some(b"")),
        ("data/.wh..wh..opq", Some(b"")),
        ("data/new", Some(b"n")),
    ]);
    let (d1, d2) = (
        store.put_blob(None, &l1[..]).unwrap(),
        store.put_blob(None, &l2[..]).unwrap(),
    );
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": [sha(&l1), sha(&l2)]}});
    let cfg = serde_json::to_vec(&config).unwrap();
    let cd = store.put_blob(Some(&sha(&cfg)), &cfg[..]).unwrap();
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d1, "size": l1.len()},
                   {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d2, "size": l2.len()}]});
    let md = store
        .put_blob(None, serde_json::to_vec(&manifest).unwrap().as_slice())
        .unwrap();
    store.tag("localhost/wh:1", &md).unwrap();

    let layers = store.layers("localhost/wh:1").unwrap();
    let merged = overlay(&layers, &dir.join("ov"));
    let names = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&merged.join("etc")),
        ["keep"],
        "whiteout hides etc/gone"
    );
    assert_eq!(
        names(&merged.join("data")),
        ["new"],
        "opaque dir hides the lower data/"
    );
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();

    let flat = dir.join("flat");
    store.flatten("localhost/wh:1", &flat).unwrap();
    assert_eq!(names(&flat.join("etc")), ["keep"]);
    assert_eq!(names(&flat.join("data")), ["new"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs root"]
fn docker_archive_import() {
    require_root();
    let dir = std::env::temp_dir().join(unique("skiff-docker"));
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let l = layer(&[("hello.txt", Some(b"hi"))]);
    std::fs::write(src.join("layer.tar"), &l).unwrap();
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/hello"]}, "rootfs": {"type": "layers", "diff_ids": [sha(&l)]}});
    std::fs::write(src.join("cfg.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    std::fs::write(
        src.join("manifest.json"),
        json!([{"Config": "cfg.json", "RepoTags": ["hello:v1"], "Layers": ["layer.tar"]}])
            .to_string(),
    )
    .unwrap();
    let tarball = dir.join("docker.tar");
    assert!(std::process::Command::new("tar")
        .args([
            "-cf",
            tarball.to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            "."
        ])
        .status()
        .unwrap()
        .success());
    let store = Store::open(dir.join("store")).unwrap();
    assert_eq!(
        store.import_archive(&tarball, None).unwrap(),
        ["docker.io/library/hello:v1"]
    );
    assert_eq!(
        store
            .config("docker.io/library/hello:v1")
            .unwrap()
            .argv(&[], &[]),
        ["/hello"]
    );
    let layers = store.layers("docker.io/library/hello:v1").unwrap();
    assert_eq!(std::fs::read(layers[0].join("hello.txt")).unwrap(), b"hi");
    assert!(
        store.import_archive(&src.join("cfg.json"), None).is_err(),
        "not an archive"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
