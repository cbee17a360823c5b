//! Store benchmark and crash helper.
//!   skiff-store-bench bench DIR         writes/s at 1, 16 and 64 concurrent writers, and
//!                                       watch delivery latency (put → event received)
//!   skiff-store-bench bench-etcd URL[,URL…]  the same against an etcd v3 cluster
//!   skiff-store-bench crash-writer DIR  write keys and print each acknowledged one,
//!                                       until killed (at most 200000), for the kill -9 test
//!   skiff-store-bench crash-writers DIR 8 concurrent writers and a watcher: prints
//!                                       "A REV KEY" per acknowledged write and "W REV KEY"
//!                                       per watched event, until killed
//!   skiff-store-bench open DIR          recover a store (log on stderr), print its revision

use skiff_control::store::{Precondition, Store};
use std::io::Write;
use std::time::{Duration, Instant};

/// Where a benchmark round writes: a fresh embedded store, or the etcd cluster (with a
/// fresh key prefix per round).
enum Target<'a> {
    Dir(&'a str),
    Etcd(&'a [String]),
}

impl Target<'_> {
    fn open(&self, round: &str) -> (Store, String) {
        match self {
            Target::Dir(dir) => {
                let path = format!("{dir}/{round}");
                let _ = std::fs::remove_dir_all(&path);
                (Store::open(&path).unwrap(), "/registry/".into())
            }
            Target::Etcd(eps) => (
                Store::etcd(eps, None).unwrap(),
                format!("/bench-{}-{round}/", std::process::id()),
            ),
        }
    }
}

fn bench(target: Target) {
    let value = vec![b'x'; 512]; // about a small Kubernetes object
    match target {
        Target::Dir(_) => {
            println!("embedded store, fsync per acknowledged write (group commit), 512-byte values")
        }
        Target::Etcd(eps) => println!("etcd v3 at {eps:?}, 512-byte values"),
    }
    for writers in [1usize, 16, 64] {
        let (s, prefix) = target.open(&format!("w{writers}"));
        let per = if writers == 1 { 2000 } else { 20_000 / writers };
        let start = Instant::now();
        let hs: Vec<_> = (0..writers)
            .map(|t| {
                let (s, v, prefix) = (s.clone(), value.clone(), prefix.clone());
                std::thread::spawn(move || {
                    for i in 0..per {
                        s.put(
                            &format!("{prefix}pods/ns/p{t}-{i}"),
                            v.clone(),
                            Precondition::None,
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let n = writers * per;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  {writers:>3} writers: {n:>6} writes in {secs:.2}s = {:>8.0} writes/s",
            n as f64 / secs
        );
    }
    let (s, prefix) = target.open("watch");
    let w = s.watch(&prefix, 0).unwrap();
    let mut lat = Vec::new();
    for i in 0..1000 {
        let t = Instant::now();
        s.put(
            &format!("{prefix}pods/ns/w{i}"),
            value.clone(),
            Precondition::None,
        )
        .unwrap();
        w.recv_timeout(Duration::from_secs(5)).unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "  watch: put+fsync → event, median {:?}, p99 {:?} (1000 events)",
        lat[500], lat[990]
    );
}

fn crash_writer(dir: &str) {
    let s = Store::open(dir).unwrap();
    let out = std::io::stdout();
    for i in 0..200_000u64 {
        s.put(
            &format!("/k/{i:08}"),
            i.to_le_bytes().to_vec(),
            Precondition::None,
        )
        .unwrap();
        let mut o = out.lock();
        writeln!(o, "{i}").unwrap();
        o.flush().unwrap();
    }
}

fn crash_writers(dir: &str) {
    let s = Store::open(dir).unwrap();
    let w = s.watch("/k/", 0).unwrap();
    let say = |line: String| {
        let out = std::io::stdout();
        let mut o = out.lock();
        writeln!(o, "{line}").unwrap();
        o.flush().unwrap();
    };
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    let key = format!("/k/{t}/{i:08}");
                    let kv = s.put(&key, vec![t as u8], Precondition::None).unwrap();
                    say(format!("A {} {key}", kv.mod_revision));
                }
            })
        })
        .collect();
    while let Ok(Some(ev)) = w.recv_timeout(Duration::from_secs(10)) {
        say(format!("W {} {}", ev.revision(), ev.kv.key));
    }
    for h in writers {
        h.join().unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("bench"), Some(dir)) => bench(Target::Dir(dir)),
        (Some("bench-etcd"), Some(urls)) => {
            let eps: Vec<String> = urls.split(',').map(str::to_string).collect();
            bench(Target::Etcd(&eps))
        }
        (Some("crash-writer"), Some(dir)) => crash_writer(dir),
        (Some("crash-writers"), Some(dir)) => crash_writers(dir),
        (Some("open"), Some(dir)) => {
            // Open (recover) a store with the log on stderr, and say where it stands.
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            let s = Store::open(dir).unwrap_or_else(|e| {
                eprintln!("open {dir}: {e}");
                std::process::exit(1)
            });
            println!("revision {}", s.revision().unwrap());
        }
        _ => {
            eprintln!(
                "usage: skiff-store-bench bench DIR | bench-etcd URL[,URL...] | crash-writer DIR | crash-writers DIR | open DIR"
            );
            std::process::exit(2);
        }
    }
}
