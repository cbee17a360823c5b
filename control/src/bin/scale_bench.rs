//! Scheduling through the API at scale, as kube-scheduler's scheduler_perf measures it:
//! register NODES Ready nodes through the API, then create PODS pods, and time from the
//! first create until a watch has seen every pod bound.
//!   skiff-scale-bench PORT [NODES PODS]   (PORT: skiff-control's plain loopback port)
//! Also prints the API server's RSS and idle CPU (PID from /proc, by the port's owner
//! given in SKIFF_PID).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A keep-alive HTTP/1.1 connection for small JSON requests.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::new(s),
        }
    }

    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        write!(
            self.r.get_mut(),
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let code = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut buf = vec![0; len];
        self.r.read_exact(&mut buf).unwrap();
        (code, String::from_utf8_lossy(&buf).into_owned())
    }
}

/// POST `n` objects from `threads` connections; returns the elapsed time.
fn create_all(
    port: u16,
    threads: usize,
    n: usize,
    path: &str,
    body: impl Fn(usize) -> String + Sync,
) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut c = Conn::new(port);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let (code, out) = c.call("POST", path, &body(i));
                    assert_eq!(code, 201, "{out}");
                }
            });
        }
    });
    start.elapsed()
}

fn proc_stat(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks = 100.0; // USER_HZ
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks;
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, rss_kb)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: skiff-scale-bench PORT [NODES PODS]");
    let nodes: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(5000);
    let pods: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(10000);
    let pid: Option<u32> = std::env::var("SKIFF_PID").ok().and_then(|p| p.parse().ok());
    let t = create_all(port, 16, nodes, "/api/v1/nodes", |i| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"node-{i:05}","labels":{{"zone":"z{}"}}}},"status":{{"conditions":[{{"type":"Ready","status":"True"}}],"allocatable":{{"cpu":"32","memory":"64Gi","pods":"110"}},"capacity":{{"cpu":"32","memory":"64Gi","pods":"110"}}}}}}"#,
            i % 3
        )
    });
    println!(
        "{nodes} nodes registered in {:.2}s ({:.0}/s)",
        t.as_secs_f64(),
        nodes as f64 / t.as_secs_f64()
    );
    // A watch from now counts binds.
    let (_, list) = Conn::new(port).call("GET", "/api/v1/namespaces/default/pods?limit=1", "");
    let rv: String = serde_json::from_str::<serde_json::Value>(&list).unwrap()["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let bound = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let watcher = {
        let bound = bound.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(s, "GET /api/v1/namespaces/default/pods?watch=true&resourceVersion={rv} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let r = BufReader::new(s);
            let mut seen = HashSet::new();
            for line in r.lines() {
                let line = line.unwrap();
                if !line.starts_with('{') {
                    continue;
                }
                let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
                let o = &ev["object"];
                if o["spec"]["nodeName"].is_string() {
                    seen.insert(o["metadata"]["name"].as_str().unwrap().to_string());
                    if seen.len() == pods {
                        *bound.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                }
            }
        })
    };
    // Twenty owners, so the scheduler spreads each one's pods. They must exist: the
    // garbage collector deletes pods whose owner does not (as kube's does).
    let owners: Vec<String> = (0..20)
        .map(|i| {
            let (_, body) = Conn::new(port).call(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                &format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"owner-{i}"}}}}"#
                ),
            );
            let cm: serde_json::Value = serde_json::from_str(&body).expect("a ConfigMap");
            cm["metadata"]["uid"].as_str().expect("its uid").to_string()
        })
        .collect();
    let first = Instant::now();
    let t = create_all(port, 16, pods, "/api/v1/namespaces/default/pods", |i| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pod-{i:05}","ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"owner-{0}","uid":"{1}","controller":true}}]}},"spec":{{"containers":[{{"name":"c","image":"busybox","resources":{{"requests":{{"cpu":"100m","memory":"128Mi"}}}}}}]}}}}"#,
            i % 20,
            owners[i % 20]
        )
    });
    println!(
        "{pods} pods created in {:.2}s ({:.0}/s)",
        t.as_secs_f64(),
        pods as f64 / t.as_secs_f64()
    );
    watcher.join().unwrap();
    let done = bound.lock().unwrap().unwrap();
    let secs = done.duration_since(first).as_secs_f64();
    println!("all {pods} bound {secs:.2}s after the first create: {:.0} pods/s (kube-scheduler's CI floor at 5000 nodes: 680-810 pods/s)", pods as f64 / secs);
    if let Some(pid) = pid {
        // The controllers finish what the burst left them first: how long that takes,
        // then a quiet minute's use.
        let settle = Instant::now();
        loop {
            let (c0, _) = proc_stat(pid);
            std::thread::sleep(Duration::from_secs(5));
            let (c1, _) = proc_stat(pid);
            if (c1 - c0) / 5.0 < 0.10 || settle.elapsed() > Duration::from_secs(120) {
                break;
            }
        }
        println!(
            "busy for {:.0}s after the last bind",
            settle.elapsed().as_secs_f64()
        );
        let (c0, _) = proc_stat(pid);
        std::thread::sleep(Duration::from_secs(60));
        let (c1, rss) = proc_stat(pid);
        println!(
            "at rest with {nodes} nodes and {pods} pods: {:.1}% of a core over 60 s, RSS {} MB",
            (c1 - c0) / 60.0 * 100.0,
            rss / 1024
        );
    }
}
