//! On etcd, an idle watch's bookmark carries the revision etcd says the watch has been
//! sent everything up to (its progress answer), not the watch's last event: while
//! other kinds change, a client resuming from the bookmark is not sent back to a
//! revision compaction may already have passed.

mod common;
use common::{Backend, Server};
use skiff_control::store::Precondition;
use std::io::{Read, Write};

#[test]
#[ignore = "needs etcd"]
fn an_idle_watch_on_etcd_bookmarks_the_revision_etcd_settled() {
    let backend = Backend::etcd("bookmarks");
    let store = backend.store();
    let server = Server::serve(store.clone());
    let from = store.revision().unwrap();
    let addr = server.addr.clone();
    let watch = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=8 HTTP/1.0\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Another kind moves the revision on; nothing the watch selects changes.
    let other = store
        .put(
            "/registry/core/secrets/default/other",
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"other","namespace":"default"}}"#.to_vec(),
            Precondition::Absent,
        )
        .unwrap()
        .mod_revision;
    let out = watch.join().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    let bookmarks: Vec<i64> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "BOOKMARK")
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(!bookmarks.is_empty(), "no bookmark: {out}");
    assert!(
        bookmarks.iter().any(|rv| *rv >= other),
        "bookmarks {bookmarks:?}, etcd at {other} or later: {out}"
    );
    drop(server);
}
