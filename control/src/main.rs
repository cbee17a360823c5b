//! skiff-control: the control plane in one binary: the API server, the controller
//! manager and the scheduler on the embedded store.

use std::net::SocketAddr;

fn usage() -> ! {
    eprintln!(
        "usage: skiff-control --data-dir DIR [--bind-address 127.0.0.1] [--insecure-port 8080]"
    );
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut data_dir = None;
    let mut bind = "127.0.0.1".to_string();
    let mut port = 8080u16;
    let mut cfg = skiff_control::controllers::Config::default();
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned();
        match args[i].as_str() {
            "--data-dir" => data_dir = v,
            "--bind-address" => bind = v.unwrap_or_else(|| usage()),
            "--insecure-port" => port = v.and_then(|p| p.parse().ok()).unwrap_or_else(|| usage()),
            "--node-monitor-grace-period" => {
                cfg.node_grace = std::time::Duration::from_secs(
                    v.and_then(|p| p.trim_end_matches('s').parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--default-unreachable-toleration-seconds" => {
                cfg.eviction_default = std::time::Duration::from_secs(
                    v.and_then(|p| p.parse().ok()).unwrap_or_else(|| usage()),
                )
            }
            _ => usage(),
        }
        i += 2;
    }
    let store = skiff_control::store::Store::open(data_dir.unwrap_or_else(|| usage()))
        .unwrap_or_else(|e| {
            eprintln!("skiff-control: {e}");
            std::process::exit(1)
        });
    // The controller manager and the scheduler run in this process on the same store.
    skiff_control::controllers::start_with(store.clone(), cfg);
    let addr: SocketAddr = format!("{bind}:{port}").parse().unwrap_or_else(|_| usage());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| {
            eprintln!("skiff-control: listen on {addr}: {e}");
            std::process::exit(1)
        });
    eprintln!(
        "skiff-control: serving the Kubernetes API on http://{}",
        listener.local_addr().unwrap()
    );
    axum::serve(listener, skiff_control::apiserver::router(store))
        .await
        .unwrap();
}
