//! Thousands of open watches are cheap: each is a task in skiff-control, not an OS
//! thread, and every one of them still gets the next event.

mod common;
use skiff_fixtures::process::Control;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[test]
fn two_thousand_open_watches() {
    const N: usize = 2000;
    let dir = std::env::temp_dir().join(format!("skiff-watches-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cp = Control::start(&dir, &["--insecure-port", &port.to_string()]);
    let pid = cp.pid();
    // The plain port is bound just after the TLS one.
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "no insecure port");
        std::thread::sleep(Duration::from_millis(50));
    }
    let request = |method: &str, path: &str, body: &str| {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut c, &mut out).unwrap();
        out
    };
    let list = request("GET", "/api/v1/namespaces/default/configmaps", "");
    let rv = list
        .split("\"resourceVersion\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_secs(1));
    let threads_before = status_field(pid, "Threads");
    let rss_before = status_field(pid, "VmRSS");
    let mut watches: Vec<BufReader<std::net::TcpStream>> = (0..N)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                c,
                "GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            BufReader::new(c)
        })
        .collect();
    // Every watch answered (headers) before the event.
    for w in &mut watches {
        let mut line = String::new();
        w.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    }
    // Past the blocking pool's idle time: only what the watches themselves hold is left.
    std::thread::sleep(Duration::from_secs(12));
    let threads = status_field(pid, "Threads");
    let rss = status_field(pid, "VmRSS");
    let created = request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ping"}}"#,
    );
    assert!(created.starts_with("HTTP/1.0 201"), "{created}");
    let t0 = Instant::now();
    for (i, w) in watches.iter_mut().enumerate() {
        let mut line = String::new();
        loop {
            line.clear();
            w.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "watch {i} ended");
            if line.contains("\"ADDED\"") {
                assert!(line.contains("\"ping\""), "{line}");
                break;
            }
        }
    }
    let fanout = t0.elapsed();
    eprintln!(
        "{N} watches: threads {threads_before} -> {threads}, RSS {rss_before} -> {rss} kB ({:.1} kB per watch), all got the event within {fanout:?}",
        (rss.saturating_sub(rss_before)) as f64 / N as f64
    );
    assert!(
        threads < threads_before + 16,
        "threads {threads_before} -> {threads} with {N} watches open"
    );
    drop(watches);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
