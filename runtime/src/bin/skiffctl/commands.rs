//! Each skiffctl command as CRI calls.

use crate::args::*;
use crate::output::{ago, print_obj, size, table, trunc};
use crate::{Cli, Command, ListArgs};
use anyhow::{anyhow, bail, Context, Result};
use skiff_runtime::cri::client::Clients;
use skiff_runtime::cri::v1;
use std::collections::HashMap;
use std::path::Path;

fn labels(kv: &[String]) -> Result<HashMap<String, String>> {
    kv.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("label {s:?} is not key=value"))
        })
        .collect()
}

/// A status with the runtime's verbose `info` entries (JSON strings) merged in, as
/// crictl prints them.
fn with_info(mut v: serde_json::Value, info: &HashMap<String, String>) -> serde_json::Value {
    for (k, text) in info {
        v[k] = serde_json::from_str(text).unwrap_or(serde_json::json!(text));
    }
    v
}

/// "512m", "1g", "1048576" → bytes.
fn parse_bytes(s: &str) -> Result<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a size (like 512m or 1g)"))?;
    Ok(n * mult)
}

/// Read a CRI config (JSON or YAML) as crictl does.
fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let v: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_str(&text)
            .with_context(|| format!("{}: neither JSON nor YAML", path.display()))?,
    };
    skiff_runtime::cri::pbjson::from_value(v).with_context(|| format!("{}", path.display()))
}

fn container_state(name: &str) -> Result<i32> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "created" => v1::ContainerState::ContainerCreated,
        "running" => v1::ContainerState::ContainerRunning,
        "exited" => v1::ContainerState::ContainerExited,
        "unknown" => v1::ContainerState::ContainerUnknown,
        other => bail!("unknown container state {other:?}"),
    } as i32)
}

fn container_state_name(s: i32) -> &'static str {
    match v1::ContainerState::try_from(s) {
        Ok(v1::ContainerState::ContainerCreated) => "Created",
        Ok(v1::ContainerState::ContainerRunning) => "Running",
        Ok(v1::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

fn pod_state_name(s: i32) -> &'static str {
    if s == v1::PodSandboxState::SandboxReady as i32 {
        "Ready"
    } else {
        "NotReady"
    }
}

/// How to reach the runtime; each command dials when it needs to.
pub struct Conn {
    endpoint: String,
    image_endpoint: Option<String>,
    timeout: std::time::Duration,
}

impl Conn {
    async fn connect(&self) -> Result<Clients, skiff_cri::client::ClientError> {
        Clients::connect(&self.endpoint, self.image_endpoint.as_deref(), self.timeout).await
    }
}

pub async fn execute(cli: Cli) -> Result<i32> {
    let conn = Conn {
        endpoint: cli.endpoint,
        image_endpoint: cli.image_endpoint,
        timeout: cli.request_timeout,
    };
    match cli.command {
        Command::Version => version(&conn).await,
        Command::Events(a) => events(&conn, a).await,
        Command::Info(a) => info(&conn, a).await,
        Command::Pods(a) => pods(&conn, a).await,
        Command::Ps(a) => ps(&conn, a).await,
        Command::Images(a) => images(&conn, a).await,
        Command::Pull(a) => pull(&conn, a).await,
        Command::Import(a) => import(&conn, a).await,
        Command::Rmi(a) => rmi(&conn, a).await,
        Command::Runp(a) => runp(&conn, a).await,
        Command::Create(a) => create(&conn, a).await,
        Command::Run(a) => run(&conn, a).await,
        Command::Start(a) => start(&conn, a).await,
        Command::Stop(a) => stop(&conn, a).await,
        Command::Rm(a) => rm(&conn, a).await,
        Command::Stopp(a) => stopp(&conn, a).await,
        Command::Rmp(a) => rmp(&conn, a).await,
        Command::Inspect(a) => inspect(&conn, a).await,
        Command::Inspectp(a) => inspectp(&conn, a).await,
        Command::Inspecti(a) => inspecti(&conn, a).await,
        Command::Logs(a) => logs(&conn, a).await,
        Command::Exec(a) => exec(&conn, a).await,
        Command::Stats(a) => stats(&conn, a).await,
        Command::Statsp(a) => statsp(&conn, a).await,
        Command::Update(a) => update(&conn, a).await,
        Command::ReopenLog(a) => reopen_log(&conn, a).await,
        Command::Attach(a) => attach(&conn, a).await,
        Command::PortForward(a) => port_forward(&conn, a).await,
    }
}

async fn version(conn: &Conn) -> Result<i32> {
    let mut c = conn.connect().await?;
    let v =
        c.rt.version(v1::VersionRequest::default())
            .await?
            .into_inner();
    println!("Version:  {}", v.version);
    println!("RuntimeName:  {}", v.runtime_name);
    println!("RuntimeVersion:  {}", v.runtime_version);
    println!("RuntimeApiVersion:  {}", v.runtime_api_version);
    Ok(0)
}

async fn events(conn: &Conn, EventsArgs { output }: EventsArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    let mut s =
        c.rt.get_container_events(v1::GetEventsRequest {})
            .await?
            .into_inner();
    while let Some(e) = s.message().await? {
        let kind = v1::ContainerEventType::try_from(e.container_event_type)
            .map(|k| k.as_str_name())
            .unwrap_or("UNKNOWN");
        let mut v = serde_json::to_value(&e)?;
        v["container_event_type"] = serde_json::json!(kind);
        print_obj(&v, &output)?;
        use std::io::Write;
        std::io::stdout().flush()?;
    }
    Ok(0)
}

async fn info(conn: &Conn, InfoArgs { output }: InfoArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    let s =
        c.rt.status(v1::StatusRequest { verbose: true })
            .await?
            .into_inner();
    print_obj(
        &with_info(serde_json::json!({"status": s.status}), &s.info),
        &output,
    )?;
    Ok(0)
}

async fn pods(
    conn: &Conn,
    PodsArgs {
        namespace,
        state,
        list:
            ListArgs {
                name,
                label,
                id,
                quiet,
                output,
                no_trunc,
            },
    }: PodsArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    let state = match state.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("ready") => Some(v1::PodSandboxState::SandboxReady as i32),
        Some("notready") => Some(v1::PodSandboxState::SandboxNotready as i32),
        Some(o) => bail!("unknown pod state {o:?} (ready or notready)"),
    };
    let filter = v1::PodSandboxFilter {
        id: id.unwrap_or_default(),
        state: state.map(|state| v1::PodSandboxStateValue { state }),
        label_selector: labels(&label)?,
    };
    let mut items =
        c.rt.list_pod_sandbox(v1::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner()
        .items;
    items.retain(|p| {
        let m = p.metadata.clone().unwrap_or_default();
        name.as_ref().is_none_or(|n| m.name.contains(n.as_str()))
            && namespace
                .as_ref()
                .is_none_or(|n| m.namespace.contains(n.as_str()))
    });
    if quiet {
        items.iter().for_each(|p| println!("{}", p.id));
    } else if output == "table" {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|p| {
                let m = p.metadata.clone().unwrap_or_default();
                vec![
                    trunc(&p.id, no_trunc),
                    ago(p.created_at),
                    pod_state_name(p.state).into(),
                    m.name,
                    m.namespace,
                    m.attempt.to_string(),
                    if p.runtime_handler.is_empty() {
                        "(default)".into()
                    } else {
                        p.runtime_handler.clone()
                    },
                ]
            })
            .collect();
        table(
            &[
                "POD ID",
                "CREATED",
                "STATE",
                "NAME",
                "NAMESPACE",
                "ATTEMPT",
                "RUNTIME",
            ],
            &rows,
        );
    } else {
        print_obj(&serde_json::json!({"items": items}), &output)?;
    }
    Ok(0)
}

async fn ps(
    conn: &Conn,
    PsArgs {
        all,
        pod,
        state,
        list:
            ListArgs {
                name,
                label,
                id,
                quiet,
                output,
                no_trunc,
            },
    }: PsArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    let state = match state {
        Some(s) => Some(container_state(&s)?),
        None if all => None,
        None => Some(v1::ContainerState::ContainerRunning as i32),
    };
    let filter = v1::ContainerFilter {
        id: id.unwrap_or_default(),
        state: state.map(|state| v1::ContainerStateValue { state }),
        pod_sandbox_id: pod.unwrap_or_default(),
        label_selector: labels(&label)?,
    };
    let mut list =
        c.rt.list_containers(v1::ListContainersRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner()
        .containers;
    list.retain(|x| {
        name.as_ref().is_none_or(|n| {
            x.metadata
                .as_ref()
                .is_some_and(|m| m.name.contains(n.as_str()))
        })
    });
    if quiet {
        list.iter().for_each(|x| println!("{}", x.id));
    } else if output == "table" {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|x| {
                let m = x.metadata.clone().unwrap_or_default();
                let image = x
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default();
                vec![
                    trunc(&x.id, no_trunc),
                    if no_trunc || !image.starts_with("sha256:") {
                        image
                    } else {
                        trunc(&image, false)
                    },
                    ago(x.created_at),
                    container_state_name(x.state).into(),
                    m.name,
                    m.attempt.to_string(),
                    trunc(&x.pod_sandbox_id, no_trunc),
                ]
            })
            .collect();
        table(
            &[
                "CONTAINER",
                "IMAGE",
                "CREATED",
                "STATE",
                "NAME",
                "ATTEMPT",
                "POD ID",
            ],
            &rows,
        );
    } else {
        print_obj(&serde_json::json!({"containers": list}), &output)?;
    }
    Ok(0)
}

async fn images(
    conn: &Conn,
    ImagesArgs {
        image,
        quiet,
        output,
        no_trunc,
    }: ImagesArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    let filter = image.map(|image| v1::ImageFilter {
        image: Some(v1::ImageSpec {
            image,
            ..Default::default()
        }),
    });
    let images = c
        .img
        .list_images(v1::ListImagesRequest { filter })
        .await?
        .into_inner()
        .images;
    if quiet {
        images.iter().for_each(|i| println!("{}", i.id));
    } else if output == "table" {
        let mut rows = Vec::new();
        for i in &images {
            let tags: Vec<(String, String)> = if i.repo_tags.is_empty() {
                vec![("<none>".into(), "<none>".into())]
            } else {
                i.repo_tags
                    .iter()
                    .map(|t| match t.rfind(':') {
                        Some(p) if !t[p..].contains('/') => {
                            (t[..p].to_string(), t[p + 1..].to_string())
                        }
                        _ => (t.clone(), "<none>".into()),
                    })
                    .collect()
            };
            for (repo, tag) in tags {
                rows.push(vec![repo, tag, trunc(&i.id, no_trunc), size(i.size)]);
            }
        }
        table(&["IMAGE", "TAG", "IMAGE ID", "SIZE"], &rows);
    } else {
        print_obj(&serde_json::json!({"images": images}), &output)?;
    }
    Ok(0)
}

async fn pull(conn: &Conn, a: PullArgs) -> Result<i32> {
    match a {
        PullArgs {
            image,
            creds,
            auth,
            image_dir: Some(dir),
            insecure,
        } => {
            // --auth is base64 of user:password, as in a docker config.
            let creds = match (creds, auth) {
                (Some(c), _) => Some(c),
                (None, Some(a)) => {
                    use base64::Engine;
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .map_err(|_| anyhow!("--auth is not base64"))?;
                    Some(String::from_utf8_lossy(&raw).into_owned())
                }
                (None, None) => None,
            };
            return pull_local(&dir, &image, creds.as_deref(), insecure);
        }
        PullArgs {
            image,
            creds,
            auth,
            image_dir: None,
            ..
        } => {
            let mut c = conn.connect().await?;
            let auth = match (creds, auth) {
                (Some(cr), _) => {
                    let (u, p) = cr
                        .split_once(':')
                        .ok_or_else(|| anyhow!("--creds must be user:password"))?;
                    Some(v1::AuthConfig {
                        username: u.into(),
                        password: p.into(),
                        ..Default::default()
                    })
                }
                (None, Some(a)) => Some(v1::AuthConfig {
                    auth: a,
                    ..Default::default()
                }),
                _ => None,
            };
            let r = c
                .img
                .pull_image(v1::PullImageRequest {
                    image: Some(v1::ImageSpec {
                        image: image.clone(),
                        ..Default::default()
                    }),
                    auth,
                    sandbox_config: None,
                })
                .await?
                .into_inner();
            println!("Image is up to date for {}", r.image_ref);
        }
    }
    Ok(0)
}

async fn import(
    _: &Conn,
    ImportArgs {
        tar,
        name,
        image_dir,
    }: ImportArgs,
) -> Result<i32> {
    let store = skiff_runtime::image::Store::open(&image_dir)?;
    for n in store.import_archive(&tar, name.as_deref())? {
        println!("imported {n}");
    }
    Ok(0)
}

async fn rmi(conn: &Conn, RmiArgs { images }: RmiArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    for image in images {
        let st = c
            .img
            .image_status(v1::ImageStatusRequest {
                image: Some(v1::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await?
            .into_inner();
        let Some(found) = st.image else {
            bail!("no such image {image}");
        };
        c.img
            .remove_image(v1::RemoveImageRequest {
                image: Some(v1::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
            })
            .await?;
        println!("Deleted: {}", found.repo_tags.first().unwrap_or(&found.id));
    }
    Ok(0)
}

async fn runp(conn: &Conn, RunpArgs { config, runtime }: RunpArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    let cfg: v1::PodSandboxConfig = read_config(&config)?;
    let id =
        c.rt.run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: runtime.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    println!("{id}");
    Ok(0)
}

async fn create(
    conn: &Conn,
    CreateArgs {
        pod,
        container_config,
        pod_config,
        with_pull,
    }: CreateArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    let id = create_container(&mut c, &pod, &container_config, &pod_config, with_pull).await?;
    println!("{id}");
    Ok(0)
}

async fn run(
    conn: &Conn,
    RunArgs {
        container_config,
        pod_config,
        with_pull,
    }: RunArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    let cfg: v1::PodSandboxConfig = read_config(&pod_config)?;
    let pod =
        c.rt.run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let id = create_container(&mut c, &pod, &container_config, &pod_config, with_pull).await?;
    c.rt.start_container(v1::StartContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    println!("{id}");
    Ok(0)
}

async fn start(conn: &Conn, StartArgs { ids }: StartArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    for id in ids {
        c.rt.start_container(v1::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        println!("{id}");
    }
    Ok(0)
}

async fn stop(conn: &Conn, StopArgs { grace, ids }: StopArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    for id in ids {
        c.rt.stop_container(v1::StopContainerRequest {
            container_id: id.clone(),
            timeout: grace,
        })
        .await?;
        println!("{id}");
    }
    Ok(0)
}

async fn rm(conn: &Conn, RmArgs { force, all, ids }: RmArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    let ids = if all {
        all_containers(&mut c).await?
    } else {
        ids
    };
    for id in ids {
        let st =
            c.rt.container_status(v1::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await?
            .into_inner();
        let running = st
            .status
            .is_some_and(|s| s.state == v1::ContainerState::ContainerRunning as i32);
        if running && !force {
            bail!("container {id} is running: stop it first or use --force");
        }
        c.rt.remove_container(v1::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        println!("{id}");
    }
    Ok(0)
}

async fn stopp(conn: &Conn, StoppArgs { ids }: StoppArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    for id in ids {
        c.rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        println!("Stopped sandbox {id}");
    }
    Ok(0)
}

async fn rmp(conn: &Conn, RmpArgs { force, all, ids }: RmpArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    let ids = if all {
        c.rt.list_pod_sandbox(v1::ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect()
    } else {
        ids
    };
    for id in ids {
        let st =
            c.rt.pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await?
            .into_inner();
        let ready = st
            .status
            .is_some_and(|s| s.state == v1::PodSandboxState::SandboxReady as i32);
        if ready && !force {
            bail!("pod sandbox {id} is ready: stop it first or use --force");
        }
        if ready {
            c.rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
        }
        c.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        println!("Removed sandbox {id}");
    }
    Ok(0)
}

async fn inspect(conn: &Conn, InspectArgs { ids, output }: InspectArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    for id in ids {
        let r =
            c.rt.container_status(v1::ContainerStatusRequest {
                container_id: id,
                verbose: true,
            })
            .await?
            .into_inner();
        print_obj(
            &with_info(serde_json::json!({"status": r.status}), &r.info),
            &output,
        )?;
    }
    Ok(0)
}

async fn inspectp(conn: &Conn, InspectpArgs { ids, output }: InspectpArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    for id in ids {
        let r =
            c.rt.pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: true,
            })
            .await?
            .into_inner();
        print_obj(
            &with_info(serde_json::json!({"status": r.status}), &r.info),
            &output,
        )?;
    }
    Ok(0)
}

async fn inspecti(conn: &Conn, InspectiArgs { images, output }: InspectiArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    for image in images {
        let r = c
            .img
            .image_status(v1::ImageStatusRequest {
                image: Some(v1::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                verbose: true,
            })
            .await?
            .into_inner();
        if r.image.is_none() {
            bail!("no such image {image}");
        }
        print_obj(
            &with_info(serde_json::json!({"status": r.image}), &r.info),
            &output,
        )?;
    }
    Ok(0)
}

async fn logs(
    conn: &Conn,
    LogsArgs {
        id,
        follow,
        tail,
        timestamps,
    }: LogsArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    print_logs(&mut c, &id, follow, tail, timestamps).await
}

async fn exec(
    conn: &Conn,
    ExecArgs {
        interactive,
        tty,
        transport,
        sync,
        timeout,
        id,
        cmd,
    }: ExecArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    // Streaming by default, as crictl exec; ExecSync when asked (or timed).
    if !sync && timeout == 0 {
        let url =
            c.rt.exec(v1::ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin: interactive,
                stdout: true,
                stderr: !tty,
            })
            .await?
            .into_inner()
            .url;
        return crate::stream::session(&url, transport, interactive, tty).await;
    }
    let r =
        c.rt.exec_sync(v1::ExecSyncRequest {
            container_id: id,
            cmd,
            timeout,
        })
        .await?
        .into_inner();
    use std::io::Write;
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stderr().write_all(&r.stderr)?;
    Ok(r.exit_code)
}

async fn stats(
    conn: &Conn,
    StatsArgs {
        all,
        id,
        pod,
        output,
    }: StatsArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    let filter = v1::ContainerStatsFilter {
        id: id.unwrap_or_default(),
        pod_sandbox_id: pod.unwrap_or_default(),
        label_selector: HashMap::new(),
    };
    let _ = all;
    let stats =
        c.rt.list_container_stats(v1::ListContainerStatsRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner()
        .stats;
    if output == "table" {
        let rows: Vec<Vec<String>> = stats
            .iter()
            .map(|s| {
                let a = s.attributes.clone().unwrap_or_default();
                let cpu = s
                    .cpu
                    .as_ref()
                    .and_then(|c| c.usage_core_nano_seconds.as_ref())
                    .map_or(0, |v| v.value);
                let mem = s
                    .memory
                    .as_ref()
                    .and_then(|m| m.working_set_bytes.as_ref())
                    .map_or(0, |v| v.value);
                let disk = s
                    .writable_layer
                    .as_ref()
                    .and_then(|w| w.used_bytes.as_ref())
                    .map_or(0, |v| v.value);
                vec![
                    trunc(&a.id, false),
                    a.metadata.map(|m| m.name).unwrap_or_default(),
                    format!("{:.2}s", cpu as f64 / 1e9),
                    size(mem),
                    size(disk),
                ]
            })
            .collect();
        table(&["CONTAINER", "NAME", "CPU TIME", "MEM", "DISK"], &rows);
    } else {
        print_obj(&serde_json::json!({"stats": stats}), &output)?;
    }
    Ok(0)
}

async fn statsp(conn: &Conn, StatspArgs { id, output }: StatspArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    let stats =
        c.rt.list_pod_sandbox_stats(v1::ListPodSandboxStatsRequest {
            filter: Some(v1::PodSandboxStatsFilter {
                id: id.unwrap_or_default(),
                label_selector: HashMap::new(),
            }),
        })
        .await?
        .into_inner()
        .stats;
    if output == "table" {
        let rows: Vec<Vec<String>> = stats
            .iter()
            .map(|s| {
                let a = s.attributes.clone().unwrap_or_default();
                let l = s.linux.clone().unwrap_or_default();
                let cpu = l
                    .cpu
                    .and_then(|c| c.usage_core_nano_seconds)
                    .map_or(0, |v| v.value);
                let mem = l
                    .memory
                    .and_then(|m| m.working_set_bytes)
                    .map_or(0, |v| v.value);
                vec![
                    trunc(&a.id, false),
                    a.metadata.map(|m| m.name).unwrap_or_default(),
                    format!("{:.2}s", cpu as f64 / 1e9),
                    size(mem),
                ]
            })
            .collect();
        table(&["POD", "NAME", "CPU TIME", "MEM"], &rows);
    } else {
        print_obj(&serde_json::json!({"stats": stats}), &output)?;
    }
    Ok(0)
}

async fn update(
    conn: &Conn,
    UpdateArgs {
        memory,
        cpu_shares,
        cpu_quota,
        cpu_period,
        cpuset_cpus,
        ids,
    }: UpdateArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    let res = v1::LinuxContainerResources {
        memory_limit_in_bytes: memory.as_deref().map(parse_bytes).transpose()?.unwrap_or(0),
        cpu_shares: cpu_shares.unwrap_or(0),
        cpu_quota: cpu_quota.unwrap_or(0),
        cpu_period: cpu_period.unwrap_or(0),
        cpuset_cpus: cpuset_cpus.unwrap_or_default(),
        ..Default::default()
    };
    for id in ids {
        c.rt.update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(res.clone()),
            windows: None,
            annotations: HashMap::new(),
        })
        .await?;
        println!("{id}");
    }
    Ok(0)
}

async fn reopen_log(conn: &Conn, ReopenLogArgs { id }: ReopenLogArgs) -> Result<i32> {
    let mut c = conn.connect().await?;
    c.rt.reopen_container_log(v1::ReopenContainerLogRequest { container_id: id })
        .await?;
    Ok(0)
}

async fn attach(
    conn: &Conn,
    AttachArgs {
        interactive,
        tty,
        transport,
        id,
    }: AttachArgs,
) -> Result<i32> {
    let mut c = conn.connect().await?;
    let url =
        c.rt.attach(v1::AttachRequest {
            container_id: id,
            stdin: interactive,
            tty,
            stdout: true,
            stderr: !tty,
        })
        .await?
        .into_inner()
        .url;
    crate::stream::session(&url, transport, interactive, tty).await
}

async fn port_forward(
    conn: &Conn,
    PortForwardArgs {
        transport,
        pod,
        port,
    }: PortForwardArgs,
) -> Result<i32> {
    let (local, remote) = match port.split_once(':') {
        Some((l, r)) => (l.parse::<u16>()?, r.parse::<u16>()?),
        None => (port.parse::<u16>()?, port.parse::<u16>()?),
    };
    let c = conn.connect().await?;
    crate::stream::port_forward(local, remote, transport, || {
        let mut rt = c.rt.clone();
        let pod = pod.clone();
        async move {
            Ok(rt
                .port_forward(v1::PortForwardRequest {
                    pod_sandbox_id: pod,
                    port: vec![remote as i32],
                })
                .await?
                .into_inner()
                .url)
        }
    })
    .await?;
    Ok(0)
}

/// Pull into a local image store with a progress display: one line per blob, redrawn
/// in place on a terminal, printed when complete otherwise.
fn pull_local(dir: &Path, image: &str, creds: Option<&str>, insecure: bool) -> Result<i32> {
    use std::io::{IsTerminal, Write};
    let store = skiff_runtime::image::Store::open(dir)?;
    let r = skiff_runtime::image::Reference::parse(image)?;
    let host = r.registry.split(':').next().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let (username, password) = match creds.map(|c| c.split_once(':')) {
        Some(Some((u, p))) => (Some(u.to_string()), Some(p.to_string())),
        Some(None) => bail!("--creds must be user:password"),
        None => (None, None),
    };
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<String> = None;
    let progress = Box::new(move |digest: &str, done: u64, total: u64| {
        let short: String = digest.chars().take(19).collect();
        let mut out = std::io::stdout();
        if tty {
            if last.as_deref() != Some(digest) && last.is_some() {
                let _ = writeln!(out);
            }
            let _ = write!(out, "\r{short}: {} / {}", size(done), size(total));
            let _ = out.flush();
        } else if done == total {
            let _ = writeln!(out, "{short}: done {}", size(total));
        }
        last = Some(digest.to_string());
    });
    let mut opts = skiff_runtime::image::PullOptions {
        insecure: insecure || loopback,
        username,
        password,
        progress: Some(progress),
        mirrors: Vec::new(),
    };
    let name = store.pull(image, &mut opts)?;
    if tty {
        println!();
    }
    println!("pulled {name} ({})", store.resolve(&name)?);
    Ok(0)
}

async fn all_containers(c: &mut Clients) -> Result<Vec<String>> {
    Ok(c.rt
        .list_containers(v1::ListContainersRequest::default())
        .await?
        .into_inner()
        .containers
        .into_iter()
        .map(|x| x.id)
        .collect())
}

async fn create_container(
    c: &mut Clients,
    pod: &str,
    container_config: &Path,
    pod_config: &Path,
    with_pull: bool,
) -> Result<String> {
    let cfg: v1::ContainerConfig = read_config(container_config)?;
    let pcfg: v1::PodSandboxConfig = read_config(pod_config)?;
    if with_pull {
        let image = cfg.image.clone().unwrap_or_default();
        let have = c
            .img
            .image_status(v1::ImageStatusRequest {
                image: Some(image.clone()),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .is_some();
        if !have {
            c.img
                .pull_image(v1::PullImageRequest {
                    image: Some(image),
                    auth: None,
                    sandbox_config: Some(pcfg.clone()),
                })
                .await?;
        }
    }
    Ok(c.rt
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(cfg),
            sandbox_config: Some(pcfg),
        })
        .await?
        .into_inner()
        .container_id)
}

/// Print the CRI log file; with `follow`, keep reading until the container exits.
async fn print_logs(
    c: &mut Clients,
    id: &str,
    follow: bool,
    tail: i64,
    timestamps: bool,
) -> Result<i32> {
    use skiff_runtime::cri::logs::parse;
    use std::io::{Read, Seek, Write};
    let status = |c: &mut Clients| {
        let mut rt = c.rt.clone();
        let id = id.to_string();
        async move {
            rt.container_status(v1::ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().status.unwrap_or_default())
        }
    };
    let st = status(c).await?;
    if st.log_path.is_empty() {
        bail!("container {id} has no log path");
    }
    let path = std::path::PathBuf::from(&st.log_path);
    let mut f = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    // Each record goes back to the stream it came from, as crictl logs does.
    let print = |chunk: &str, skip: usize| -> Result<()> {
        let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
        for line in chunk.lines().skip(skip) {
            if let Some(r) = parse(line) {
                let out: &mut dyn Write = match r.stream {
                    "stderr" => &mut stderr,
                    _ => &mut stdout,
                };
                if timestamps {
                    write!(out, "{} ", r.time)?;
                }
                write!(out, "{}", r.content)?;
                if !r.partial {
                    writeln!(out)?;
                }
            }
        }
        stdout.flush()?;
        stderr.flush()?;
        Ok(())
    };
    let n = text.lines().count();
    let skip = if tail >= 0 {
        n.saturating_sub(tail as usize)
    } else {
        0
    };
    print(&text, skip)?;
    if !follow {
        return Ok(0);
    }
    let mut pos = f.stream_position()?;
    let mut partial = String::new();
    loop {
        let mut buf = String::new();
        f.seek(std::io::SeekFrom::Start(pos))?;
        let got = f.read_to_string(&mut buf)?;
        pos += got as u64;
        partial.push_str(&buf);
        if let Some(i) = partial.rfind('\n') {
            let done: String = partial.drain(..=i).collect();
            print(&done, 0)?;
        }
        if got == 0 {
            let st = status(c).await?;
            if st.state != v1::ContainerState::ContainerRunning as i32 {
                // One last read: output written just before the exit.
                f.seek(std::io::SeekFrom::Start(pos))?;
                let mut rest = String::new();
                f.read_to_string(&mut rest)?;
                partial.push_str(&rest);
                print(&partial, 0)?;
                return Ok(0);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
