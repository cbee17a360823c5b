//! Request bodies in the Kubernetes protobuf encoding, which kubectl's typed clients send
//! (`kubectl create namespace|configmap|secret|serviceaccount|deployment|service|job`): the `k8s\0`
//! envelope around a runtime.Unknown, whose raw bytes are the object. The object is
//! decoded into JSON by a table of the wire schema (field numbers from the API's
//! generated.proto) for the kinds those commands create; any field the table does not
//! know is refused (415) rather than dropped.

use serde_json::{json, Map, Value};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// bytes: base64 in JSON (empty: unset).
    Bytes,
    Int,
    /// An int32 that Go always writes; 0 means unset.
    IntOrUnset,
    Bool,
    Msg(&'static [Field]),
    RepStr,
    RepMsg(&'static [Field]),
    MapStr,
    MapBytes,
    /// map<string, resource.Quantity> (a Quantity is a message whose field 1 is the string).
    MapQuantity,
    /// intstr.IntOrString: type (1: string), intVal, strVal; JSON has the number or string.
    IntOrString,
    /// Present on the wire, meaningless to a create (times, managedFields): ignored.
    Skip,
}

#[derive(Clone, Copy)]
pub(crate) struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field { num, name, kind }
}

const OWNER_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "controller", Kind::Bool),
    f(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(4, "selfLink", Kind::Skip),
    f(5, "uid", Kind::Skip),
    f(6, "resourceVersion", Kind::Skip),
    f(7, "generation", Kind::Skip),
    f(8, "creationTimestamp", Kind::Skip),
    f(9, "deletionTimestamp", Kind::Skip),
    f(10, "deletionGracePeriodSeconds", Kind::Skip),
    f(11, "labels", Kind::MapStr),
    f(12, "annotations", Kind::MapStr),
    f(13, "ownerReferences", Kind::RepMsg(OWNER_REF)),
    f(14, "finalizers", Kind::RepStr),
    f(17, "managedFields", Kind::Skip),
];

const NAMESPACE_SPEC: &[Field] = &[f(1, "finalizers", Kind::RepStr)];
pub(crate) const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(NAMESPACE_SPEC)),
    f(3, "status", Kind::Skip),
];

pub(crate) const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapStr),
    f(3, "binaryData", Kind::MapBytes),
    f(4, "immutable", Kind::Bool),
];

pub(crate) const SECRET: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapBytes),
    f(3, "type", Kind::Str),
    f(4, "stringData", Kind::MapStr),
    f(5, "immutable", Kind::Bool),
];

const OBJECT_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(2, "namespace", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
];
const LOCAL_REF: &[Field] = &[f(1, "name", Kind::Str)];
pub(crate) const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "secrets", Kind::RepMsg(OBJECT_REF)),
    f(3, "imagePullSecrets", Kind::RepMsg(LOCAL_REF)),
    f(4, "automountServiceAccountToken", Kind::Bool),
];

const CONTAINER_PORT: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "hostPort", Kind::IntOrUnset),
    f(3, "containerPort", Kind::Int),
    f(4, "protocol", Kind::Str),
    f(5, "hostIP", Kind::Str),
];
const RESOURCES: &[Field] = &[
    f(1, "limits", Kind::MapQuantity),
    f(2, "requests", Kind::MapQuantity),
];
const CONTAINER: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "image", Kind::Str),
    f(3, "command", Kind::RepStr),
    f(4, "args", Kind::RepStr),
    f(5, "workingDir", Kind::Str),
    f(6, "ports", Kind::RepMsg(CONTAINER_PORT)),
    f(8, "resources", Kind::Msg(RESOURCES)),
    f(14, "imagePullPolicy", Kind::Str),
];
const POD_SPEC: &[Field] = &[
    f(2, "containers", Kind::RepMsg(CONTAINER)),
    f(3, "restartPolicy", Kind::Str),
];
const POD_TEMPLATE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(POD_SPEC)),
];
const LABEL_SELECTOR: &[Field] = &[f(1, "matchLabels", Kind::MapStr)];
const STRATEGY: &[Field] = &[f(1, "type", Kind::Str)];
const DEPLOYMENT_SPEC: &[Field] = &[
    f(1, "replicas", Kind::Int),
    f(2, "selector", Kind::Msg(LABEL_SELECTOR)),
    f(3, "template", Kind::Msg(POD_TEMPLATE)),
    f(4, "strategy", Kind::Msg(STRATEGY)),
];
pub(crate) const DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(DEPLOYMENT_SPEC)),
    f(3, "status", Kind::Skip),
];

// batch/v1 (`kubectl create job`).
const JOB_SPEC: &[Field] = &[
    f(1, "parallelism", Kind::Int),
    f(2, "completions", Kind::Int),
    f(3, "activeDeadlineSeconds", Kind::Int),
    f(4, "selector", Kind::Msg(LABEL_SELECTOR)),
    f(5, "manualSelector", Kind::Bool),
    f(6, "template", Kind::Msg(POD_TEMPLATE)),
    f(7, "backoffLimit", Kind::Int),
    f(8, "ttlSecondsAfterFinished", Kind::Int),
    f(9, "completionMode", Kind::Str),
    f(10, "suspend", Kind::Bool),
];
pub(crate) const JOB: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(JOB_SPEC)),
    f(3, "status", Kind::Skip),
];

const JOB_TEMPLATE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(JOB_SPEC)),
];
const CRON_JOB_SPEC: &[Field] = &[
    f(1, "schedule", Kind::Str),
    f(2, "startingDeadlineSeconds", Kind::Int),
    f(3, "concurrencyPolicy", Kind::Str),
    f(4, "suspend", Kind::Bool),
    f(5, "jobTemplate", Kind::Msg(JOB_TEMPLATE)),
    f(6, "successfulJobsHistoryLimit", Kind::Int),
    f(7, "failedJobsHistoryLimit", Kind::Int),
    f(8, "timeZone", Kind::Str),
];
pub(crate) const CRON_JOB: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(CRON_JOB_SPEC)),
    f(3, "status", Kind::Skip),
];

// authorization.k8s.io/v1 (`kubectl auth can-i`).
// rbac.authorization.k8s.io/v1 (kubectl create role/rolebinding/… send these).
const POLICY_RULE: &[Field] = &[
    f(1, "verbs", Kind::RepStr),
    f(2, "apiGroups", Kind::RepStr),
    f(3, "resources", Kind::RepStr),
    f(4, "resourceNames", Kind::RepStr),
    f(5, "nonResourceURLs", Kind::RepStr),
];
pub(crate) const ROLE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "rules", Kind::RepMsg(POLICY_RULE)),
    f(3, "aggregationRule", Kind::Skip),
];
const SUBJECT: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(2, "apiGroup", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "namespace", Kind::Str),
];
const ROLE_REF: &[Field] = &[
    f(1, "apiGroup", Kind::Str),
    f(2, "kind", Kind::Str),
    f(3, "name", Kind::Str),
];
pub(crate) const ROLE_BINDING: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "subjects", Kind::RepMsg(SUBJECT)),
    f(3, "roleRef", Kind::Msg(ROLE_REF)),
];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Kind::Str),
    f(2, "verb", Kind::Str),
    f(3, "group", Kind::Str),
    f(4, "version", Kind::Str),
    f(5, "resource", Kind::Str),
    f(6, "subresource", Kind::Str),
    f(7, "name", Kind::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Kind::Str), f(2, "verb", Kind::Str)];
const SELF_ACCESS_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Kind::Msg(RESOURCE_ATTRIBUTES)),
    f(
        2,
        "nonResourceAttributes",
        Kind::Msg(NON_RESOURCE_ATTRIBUTES),
    ),
];
// certificates.k8s.io/v1 (kubectl certificate approve|deny sends the request back
// through …/approval in protobuf). Times are the server's to set.
const CSR_SPEC: &[Field] = &[
    f(1, "request", Kind::Bytes),
    f(2, "username", Kind::Str),
    f(3, "uid", Kind::Skip),
    f(4, "groups", Kind::RepStr),
    f(5, "usages", Kind::RepStr),
    f(6, "extra", Kind::Skip),
    f(7, "signerName", Kind::Str),
    f(8, "expirationSeconds", Kind::IntOrUnset),
];
const CSR_CONDITION: &[Field] = &[
    f(1, "type", Kind::Str),
    f(2, "reason", Kind::Str),
    f(3, "message", Kind::Str),
    f(4, "lastUpdateTime", Kind::Skip),
    f(5, "lastTransitionTime", Kind::Skip),
    f(6, "status", Kind::Str),
];
const CSR_STATUS: &[Field] = &[
    f(1, "conditions", Kind::RepMsg(CSR_CONDITION)),
    f(2, "certificate", Kind::Bytes),
];
pub(crate) const CERTIFICATE_SIGNING_REQUEST: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(CSR_SPEC)),
    f(3, "status", Kind::Msg(CSR_STATUS)),
];

pub(crate) const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(SELF_ACCESS_SPEC)),
    f(3, "status", Kind::Skip),
];

const SERVICE_PORT: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "protocol", Kind::Str),
    f(3, "port", Kind::Int),
    f(4, "targetPort", Kind::IntOrString),
    f(5, "nodePort", Kind::IntOrUnset),
    f(6, "appProtocol", Kind::Str),
];
const CLIENT_IP_CONFIG: &[Field] = &[f(1, "timeoutSeconds", Kind::Int)];
const SESSION_AFFINITY_CONFIG: &[Field] = &[f(1, "clientIP", Kind::Msg(CLIENT_IP_CONFIG))];
const SERVICE_SPEC: &[Field] = &[
    f(1, "ports", Kind::RepMsg(SERVICE_PORT)),
    f(2, "selector", Kind::MapStr),
    f(3, "clusterIP", Kind::Str),
    f(4, "type", Kind::Str),
    f(5, "externalIPs", Kind::RepStr),
    f(7, "sessionAffinity", Kind::Str),
    f(8, "loadBalancerIP", Kind::Str),
    f(9, "loadBalancerSourceRanges", Kind::RepStr),
    f(10, "externalName", Kind::Str),
    f(11, "externalTrafficPolicy", Kind::Str),
    f(12, "healthCheckNodePort", Kind::IntOrUnset),
    f(13, "publishNotReadyAddresses", Kind::Bool),
    f(
        14,
        "sessionAffinityConfig",
        Kind::Msg(SESSION_AFFINITY_CONFIG),
    ),
    f(17, "ipFamilyPolicy", Kind::Str),
    f(18, "clusterIPs", Kind::RepStr),
    f(19, "ipFamilies", Kind::RepStr),
    f(20, "allocateLoadBalancerNodePorts", Kind::Bool),
    f(21, "loadBalancerClass", Kind::Str),
    f(22, "internalTrafficPolicy", Kind::Str),
];
pub(crate) const SERVICE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(SERVICE_SPEC)),
    f(3, "status", Kind::Skip),
];

/// Raw protobuf fields: (field number, wire value).
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn fields(b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let tag = varint(b, &mut pos)?;
        let (num, wt) = (tag >> 3, tag & 7);
        let w = match wt {
            0 => Wire::Varint(varint(b, &mut pos)?),
            2 => {
                let len = varint(b, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or("truncated field")?;
                let s = &b[pos..end];
                pos = end;
                Wire::Bytes(s)
            }
            1 => {
                pos += 8;
                Wire::Fixed
            }
            5 => {
                pos += 4;
                Wire::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((num, w));
    }
    Ok(out)
}

fn string(w: &Wire) -> Result<String, String> {
    match w {
        Wire::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8".into()),
        _ => Err("expected a string".into()),
    }
}

fn map_entry(w: &Wire, bytes_value: bool) -> Result<(String, Value), String> {
    let Wire::Bytes(b) = w else {
        return Err("expected a map entry".into());
    };
    let mut k = String::new();
    let mut v = json!("");
    for (num, w) in fields(b)? {
        match num {
            1 => k = string(&w)?,
            2 => {
                v = match (&w, bytes_value) {
                    (Wire::Bytes(raw), true) => {
                        use base64::Engine;
                        json!(base64::engine::general_purpose::STANDARD.encode(raw))
                    }
                    _ => json!(string(&w)?),
                }
            }
            _ => {}
        }
    }
    Ok((k, v))
}

fn quantity(w: &Wire) -> Result<Value, String> {
    let Wire::Bytes(b) = w else {
        return Err("expected a quantity".into());
    };
    for (num, w) in fields(b)? {
        if num == 1 {
            return Ok(json!(string(&w)?));
        }
    }
    Ok(json!("0"))
}

fn message(b: &[u8], schema: &[Field], path: &str) -> Result<Value, String> {
    let mut obj = Map::new();
    for (num, w) in fields(b)? {
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            // Go's encoder writes non-pointer fields even when empty: a zero value of a
            // field we do not model is its default and can go; anything else cannot.
            let zero = match &w {
                Wire::Varint(v) => *v == 0,
                Wire::Bytes(b) => b.is_empty(),
                Wire::Fixed => false,
            };
            if zero {
                continue;
            }
            return Err(format!(
                "{path}: field number {num} is not supported in protobuf bodies; send JSON"
            ));
        };
        let name = field.name;
        let p = format!("{path}.{name}");
        match field.kind {
            Kind::Skip => {}
            Kind::Str => {
                // Empty strings are Go's unset values.
                let v = string(&w)?;
                if !v.is_empty() {
                    obj.insert(name.into(), json!(v));
                }
            }
            Kind::IntOrUnset => {
                if let Wire::Varint(v) = w {
                    if v != 0 {
                        obj.insert(name.into(), json!(v as i64));
                    }
                }
            }
            Kind::Int => {
                let Wire::Varint(v) = w else {
                    return Err(format!("{p}: expected an integer"));
                };
                obj.insert(name.into(), json!(v as i64));
            }
            Kind::Bool => {
                let Wire::Varint(v) = w else {
                    return Err(format!("{p}: expected a bool"));
                };
                if v != 0 {
                    obj.insert(name.into(), json!(true));
                }
            }
            Kind::Msg(s) => {
                let Wire::Bytes(raw) = w else {
                    return Err(format!("{p}: expected a message"));
                };
                obj.insert(name.into(), message(raw, s, &p)?);
            }
            Kind::Bytes => {
                let Wire::Bytes(raw) = w else {
                    return Err(format!("{p}: expected bytes"));
                };
                if !raw.is_empty() {
                    use base64::Engine;
                    obj.insert(
                        name.into(),
                        json!(base64::engine::general_purpose::STANDARD.encode(raw)),
                    );
                }
            }
            Kind::RepStr => {
                let e = obj.entry(name).or_insert_with(|| json!([]));
                e.as_array_mut().expect("array").push(json!(string(&w)?));
            }
            Kind::RepMsg(s) => {
                let Wire::Bytes(raw) = w else {
                    return Err(format!("{p}: expected a message"));
                };
                let item = message(raw, s, &p)?;
                let e = obj.entry(name).or_insert_with(|| json!([]));
                e.as_array_mut().expect("array").push(item);
            }
            Kind::MapStr | Kind::MapBytes => {
                let (k, v) = map_entry(&w, matches!(field.kind, Kind::MapBytes))?;
                let e = obj.entry(name).or_insert_with(|| json!({}));
                e[k] = v;
            }
            Kind::IntOrString => {
                let Wire::Bytes(raw) = w else {
                    return Err(format!("{p}: expected an IntOrString"));
                };
                let (mut is_str, mut int, mut s) = (false, 0i64, String::new());
                for (n, w) in fields(raw)? {
                    match (n, &w) {
                        (1, Wire::Varint(t)) => is_str = *t == 1,
                        (2, Wire::Varint(v)) => int = *v as i32 as i64,
                        (3, _) => s = string(&w)?,
                        _ => {}
                    }
                }
                obj.insert(name.into(), if is_str { json!(s) } else { json!(int) });
            }
            Kind::MapQuantity => {
                let Wire::Bytes(raw) = w else {
                    return Err(format!("{p}: expected a map entry"));
                };
                let mut k = String::new();
                let mut v = json!("0");
                for (n, w) in fields(raw)? {
                    match n {
                        1 => k = string(&w)?,
                        2 => v = quantity(&w)?,
                        _ => {}
                    }
                }
                let e = obj.entry(name).or_insert_with(|| json!({}));
                e[k] = v;
            }
        }
    }
    Ok(Value::Object(obj))
}

/// Decode a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf body (no k8s magic)")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (num, w) in fields(rest)? {
        match num {
            1 => {
                let Wire::Bytes(tm) = w else { continue };
                for (n, w) in fields(tm)? {
                    match n {
                        1 => api_version = string(&w)?,
                        2 => kind = string(&w)?,
                        _ => {}
                    }
                }
            }
            2 => {
                if let Wire::Bytes(b) = w {
                    raw = Some(b);
                }
            }
            3 if matches!(&w, Wire::Bytes(b) if !b.is_empty()) => {
                return Err("compressed protobuf bodies are not supported".into());
            }
            _ => {}
        }
    }
    let s = super::kinds::of(&kind)
        .protobuf()
        .ok_or_else(|| format!("{kind} in protobuf is not supported; send JSON"))?;
    let mut v = message(raw.unwrap_or(&[]), s, &kind)?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3 | 2) as u8, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn configmap_in_an_envelope() {
        let meta = [
            field(1, b"cm"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
            vec![4 << 3, 1],
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &cm)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"app": "web"}}, "data": {"k": "v"}, "immutable": true})
        );
        // An unknown field is refused, not dropped.
        let bad = [
            MAGIC.to_vec(),
            field(1, &tm),
            field(2, &[cm.clone(), field(9, b"x")].concat()),
        ]
        .concat();
        // Empty unknown fields (Go writes them) are defaults and go.
        let with_empty = [
            MAGIC.to_vec(),
            field(1, &tm),
            field(2, &[cm.clone(), field(9, b"")].concat()),
        ]
        .concat();
        assert_eq!(decode(&with_empty).unwrap(), v);
        assert!(decode(&bad).unwrap_err().contains("field number 9"));
    }
}
