//! ClusterIP and NodePort allocation for Services. Each address or port is reserved by
//! a store key created only if absent, so two concurrent creates can never get the same
//! one, and the reservations live as long as the store: a restart reuses nothing.

use super::status::ApiError;
use crate::store::{Precondition, Store, StoreError};
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// Service network and NodePort range (kube-apiserver's defaults).
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
pub const NODE_PORTS: (u16, u16) = (30000, 32767);

fn ip_key(ip: Ipv4Addr) -> String {
    format!("/registry/ranges/serviceips/{ip}")
}
fn port_key(proto: &str, port: u16) -> String {
    format!(
        "/registry/ranges/servicenodeports/{}/{port}",
        proto.to_ascii_lowercase()
    )
}

fn reserve(store: &Store, key: &str, owner: &str) -> Result<bool, ApiError> {
    match store.put(key, owner.as_bytes().to_vec(), Precondition::Absent) {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )),
    }
}

fn in_cidr(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - SERVICE_CIDR.1);
    u32::from(ip) & mask == u32::from(SERVICE_CIDR.0)
}

/// Fill in spec.clusterIP(s) and node ports of a new Service, reserving each.
pub fn allocate(store: &Store, svc: &mut Value, owner: &str) -> Result<Vec<String>, ApiError> {
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let invalid = |m: String| ApiError::invalid("Service", &name, &m);
    let mut reserved = Vec::new();
    let typ = svc["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    if requested != "None" {
        let ip = if requested.is_empty() {
            // First free address after the network and the first (the kubernetes service).
            let base = u32::from(SERVICE_CIDR.0);
            let size = 1u32 << (32 - SERVICE_CIDR.1);
            let mut found = None;
            for i in 2..size - 1 {
                let ip = Ipv4Addr::from(base + i);
                if reserve(store, &ip_key(ip), owner)? {
                    found = Some(ip);
                    break;
                }
            }
            found.ok_or_else(|| invalid("spec.clusterIPs: Internal error: range is full".into()))?
        } else {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                invalid(format!(
                    "spec.clusterIPs: Invalid value: \"{requested}\": must be a valid IP address"
                ))
            })?;
            if !in_cidr(ip) {
                return Err(invalid(format!("spec.clusterIPs: Invalid value: \"{requested}\": provided IP is not in the valid range. The range of valid IPs is {}/{}", SERVICE_CIDR.0, SERVICE_CIDR.1)));
            }
            if !reserve(store, &ip_key(ip), owner)? {
                return Err(invalid(format!("spec.clusterIPs: Invalid value: []string{{\"{requested}\"}}: failed to allocate IP {requested}: provided IP is already allocated")));
            }
            ip
        };
        reserved.push(ip_key(ip));
        svc["spec"]["clusterIP"] = json!(ip.to_string());
        svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
    }
    if typ == "NodePort" || typ == "LoadBalancer" {
        let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
        let mut out = Vec::new();
        for mut p in ports {
            let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
            let port = match p["nodePort"].as_u64() {
                Some(n) => {
                    let n = n as u16;
                    if !(NODE_PORTS.0..=NODE_PORTS.1).contains(&n) {
                        release(store, &reserved);
                        return Err(invalid(format!("spec.ports[].nodePort: Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}", NODE_PORTS.0, NODE_PORTS.1)));
                    }
                    if !reserve(store, &port_key(&proto, n), owner)? {
                        release(store, &reserved);
                        return Err(invalid(format!("spec.ports[].nodePort: Invalid value: {n}: provided port is already allocated")));
                    }
                    n
                }
                None => {
                    let mut found = None;
                    for n in NODE_PORTS.0..=NODE_PORTS.1 {
                        if reserve(store, &port_key(&proto, n), owner)? {
                            found = Some(n);
                            break;
                        }
                    }
                    match found {
                        Some(n) => n,
                        None => {
                            release(store, &reserved);
                            return Err(invalid(
                                "spec.ports[].nodePort: Internal error: range is full".into(),
                            ));
                        }
                    }
                }
            };
            reserved.push(port_key(&proto, port));
            p["nodePort"] = json!(port);
            out.push(p);
        }
        svc["spec"]["ports"] = json!(out);
    }
    Ok(reserved)
}

/// Give back reservations (a failed create, or a deleted Service).
pub fn release(store: &Store, keys: &[String]) {
    for k in keys {
        let _ = store.delete(k, Precondition::None);
    }
}

/// The reservation keys a stored Service holds.
pub fn held(svc: &Value) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(ip) = svc["spec"]["clusterIP"]
        .as_str()
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
    {
        v.push(ip_key(ip));
    }
    for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
        if let Some(n) = p["nodePort"].as_u64() {
            v.push(port_key(p["protocol"].as_str().unwrap_or("TCP"), n as u16));
        }
    }
    v
}
