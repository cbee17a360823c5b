//! Object operations: metadata on create, optimistic concurrency on update, patches,
//! selectors on list, and watch streams.

use super::resources::{self, Resource};
use super::selector::LabelSelector;
use super::status::ApiError;
use super::table::{table, TABLE_CONTENT_TYPE};
use super::{body_stream, json_response};
use crate::store::{EventKind, KeyValue, Precondition, Store, StoreError};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;

pub struct Ctx<'a> {
    pub store: &'a Store,
    pub r: &'static Resource,
    pub ns: Option<&'a str>,
    pub table: bool,
    /// Who writes (managedFields): `?fieldManager=`, else the client's user agent.
    pub manager: &'a str,
    /// `?dryRun=All`: validate, admit and answer, but store nothing.
    pub dry_run: bool,
    /// `?fieldValidation=`: what to do about fields the kind does not declare.
    pub validation: FieldValidation,
    /// Warnings for the response's `Warning` headers.
    pub warnings: std::cell::RefCell<Vec<String>>,
    /// Who asks (None: the control plane's own controllers).
    pub user: Option<&'a super::tls::User>,
}

/// kube-apiserver's fieldValidation values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<FieldValidation, ApiError> {
        match s {
            None | Some("") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(o) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{o}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
    rfc3339_in(0)
}

/// The time `from_now` seconds ahead, as RFC 3339 (UTC, whole seconds).
pub(crate) fn rfc3339_in(from_now: i64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + from_now;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // civil from days (Howard Hinnant)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n.div_ceil(2)];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b.iter().map(|x| format!("{x:02x}")).collect::<String>()[..n].to_string()
}

pub(crate) fn uid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub(crate) fn store_err(r: &Resource, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found(&r.qualified(), name),
        StoreError::AlreadyExists(_) => ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", r.qualified()),
        )
        .about(&r.qualified(), name),
        StoreError::Conflict { .. } => ApiError::conflict_retry(r, name),
        StoreError::Compacted { .. } => ApiError::new(StatusCode::GONE, "Expired", e.to_string()),
        // kube-apiserver's answers when etcd cannot: the client may retry later.
        StoreError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            e.to_string(),
        ),
        StoreError::Timeout(_) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", e.to_string())
        }
        StoreError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            other.to_string(),
        ),
    }
}

/// The stored object `name` of the context's resource: 404 only when the store says it
/// is absent.
pub(crate) fn fetch(c: &Ctx, name: &str) -> Result<KeyValue, ApiError> {
    c.store
        .get(&c.r.key(c.ns, name))
        .map_err(|e| store_err(c.r, name, e))?
        .ok_or_else(|| ApiError::not_found(&c.r.qualified(), name))
}

/// A stored value as the API object: resourceVersion from the store.
pub(crate) fn decode(kv: &KeyValue) -> Value {
    let mut v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    v["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    v
}

pub(crate) fn encode(v: &Value) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&v).expect("serializes")
}

/// DNS-1123 subdomain, the rule for most object names.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.as_bytes()[n.len() - 1].is_ascii_alphanumeric()
}

fn parse_body(c: &Ctx, body: &[u8]) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    if let Some(k) = v["kind"].as_str() {
        if k != c.r.kind {
            return Err(ApiError::bad_request(format!(
                "the kind {k:?} does not match the resource {} (kind {})",
                c.r.qualified(),
                c.r.kind
            )));
        }
    }
    if let Some(a) = v["apiVersion"].as_str() {
        if a != c.r.api_version() {
            return Err(ApiError::bad_request(format!(
                "apiVersion {a:?} is not served for {} (use {})",
                c.r.qualified(),
                c.r.api_version()
            )));
        }
    }
    check_fields(c, &mut v, Vec::new)?;
    super::kinds::of(c.r.kind).defaults(&mut v);
    typed_check(c.r, &v)?;
    Ok(v)
}

/// Reject objects that do not deserialize as their Kubernetes type (wrong field types)
/// or break their kind's own rules (checked on the defaulted object).
fn typed_check(r: &Resource, v: &Value) -> Result<(), ApiError> {
    typed(r, v)?;
    super::kinds::of(r.kind).validate(v)
}

/// The object through its Kubernetes type and back (None for kinds served untyped):
/// what the type does not declare is gone from it.
fn typed(r: &Resource, v: &Value) -> Result<Option<Value>, ApiError> {
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    super::kinds::of(r.kind)
        .typed(v)
        .transpose()
        .map_err(|e| ApiError::invalid(r.kind, name, &e.to_string()))
}

/// Take out of `v` the fields its type does not declare (as kube-apiserver's typed
/// decoding drops them) and name them ("spec.foo", "spec.containers[0].bar").
fn prune_unknown(r: &Resource, v: &mut Value) -> Result<Vec<String>, ApiError> {
    fn walk(v: &mut Value, known: &Value, path: &str, out: &mut Vec<String>) {
        let at = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match (v, known) {
            (Value::Object(a), Value::Object(b)) => {
                a.retain(|k, x| {
                    let keep = b.contains_key(k) || x.is_null();
                    if !keep {
                        out.push(at(k));
                    }
                    keep
                });
                for (k, x) in a.iter_mut() {
                    if let Some(y) = b.get(k) {
                        walk(x, y, &at(k), out);
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for (i, (x, y)) in a.iter_mut().zip(b).enumerate() {
                    walk(x, y, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(known) = typed(r, v)? {
        walk(v, &known, "", &mut out);
    }
    Ok(out)
}

/// fieldValidation (kubectl --validate): Strict refuses fields the kind does not declare,
/// Warn (the default) drops them with a warning for each, Ignore drops them silently.
/// `before`: fields already unknown in the stored object, not the request's doing
/// (computed only when there are unknown fields).
fn check_fields(
    c: &Ctx,
    v: &mut Value,
    before: impl FnOnce() -> Vec<String>,
) -> Result<(), ApiError> {
    let found = prune_unknown(c.r, v)?;
    if found.is_empty() {
        return Ok(());
    }
    // Only then is the stored object looked at (most writes have nothing unknown).
    let before = before();
    let unknown: Vec<String> = found
        .into_iter()
        .filter(|f| !before.contains(f))
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    match c.validation {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = c.r.kind,
            v = c.r.version,
        ))),
        FieldValidation::Warn => {
            c.warnings.borrow_mut().extend(unknown);
            Ok(())
        }
        FieldValidation::Ignore => Ok(()),
    }
}

fn check_namespace(c: &Ctx) -> Result<(), ApiError> {
    if let Some(ns) = c.ns {
        let nsr = resources::find("", "v1", "namespaces").expect("namespaces");
        let Some(kv) = c
            .store
            .get(&nsr.key(None, ns))
            .map_err(|e| store_err(nsr, ns, e))?
        else {
            return Err(ApiError::not_found("namespaces", ns));
        };
        if decode(&kv)["metadata"]["deletionTimestamp"].is_string() {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "Forbidden", format!("{} \"\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", c.r.plural)));
        }
    }
    Ok(())
}

pub fn ensure_default_namespaces(store: &Store) -> Result<(), StoreError> {
    let nsr = resources::find("", "v1", "namespaces").expect("namespaces");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "uid": uid(), "creationTimestamp": now_rfc3339()}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        match store.put(&nsr.key(None, ns), encode(&obj), Precondition::Absent) {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn respond(c: &Ctx, code: StatusCode, obj: &Value, rv: i64) -> Response {
    if c.table {
        let t = table(c.r.kind, std::slice::from_ref(obj), rv);
        return (code, [("content-type", TABLE_CONTENT_TYPE)], t.to_string()).into_response();
    }
    json_response(code, obj)
}

pub fn create(c: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let v = parse_body(c, body)?;
    let kv = create_object(c, v)?;
    let mut obj = decode(&kv);
    if c.dry_run {
        // Never stored: no resourceVersion (as kube-apiserver answers).
        obj["metadata"]
            .as_object_mut()
            .map(|m| m.remove("resourceVersion"));
    }
    Ok(respond(c, StatusCode::CREATED, &obj, kv.mod_revision))
}

/// Create an object as the API does for a client — and for the controllers, which
/// create through here: defaults and validation, namespace admission, the name (or
/// generateName), identity, generation, managedFields, ClusterIP allocation.
pub(crate) fn create_value(c: &Ctx, mut v: Value) -> Result<KeyValue, ApiError> {
    super::kinds::of(c.r.kind).defaults(&mut v);
    typed_check(c.r, &v)?;
    create_object(c, v)
}

/// The create itself, of an object already defaulted and checked.
fn create_object(c: &Ctx, mut v: Value) -> Result<KeyValue, ApiError> {
    check_namespace(c)?;
    let meta = v["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata is required"))?;
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        let base = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if base.is_empty() {
            return Err(ApiError::invalid(
                c.r.kind,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        name = format!("{base}{}", random_hex(5));
    }
    if !valid_name(&name) {
        return Err(ApiError::invalid(c.r.kind, &name, &format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")));
    }
    if let (Some(ns), Some(body_ns)) = (c.ns, meta.get("namespace").and_then(Value::as_str)) {
        if ns != body_ns {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
    }
    meta.insert("name".into(), json!(name));
    if c.r.namespaced {
        meta.insert("namespace".into(), json!(c.ns.unwrap_or("default")));
    }
    meta.insert("uid".into(), json!(uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.insert("generation".into(), json!(1));
    meta.remove("resourceVersion");
    super::kinds::of(c.r.kind).prepare_for_create(&mut v);
    if let Some(u) = c.user {
        super::kinds::of(c.r.kind).record_requester(&mut v, u);
    }
    v["apiVersion"] = json!(c.r.api_version());
    v["kind"] = json!(c.r.kind);
    // A first server-side apply arrives with its managedFields; other creates are Updates.
    if v["metadata"]["managedFields"].is_null() {
        super::apply::record_update(None, &mut v, c.manager, &now_rfc3339(), "");
    }
    let key = c.r.key(c.ns, &name);
    if c.store
        .get(&key)
        .map_err(|e| store_err(c.r, &name, e))?
        .is_some()
    {
        return Err(store_err(
            c.r,
            &name,
            StoreError::AlreadyExists(name.clone()),
        ));
    }
    let reserved = super::kinds::of(c.r.kind).reserve(c.store, &mut v, &key)?;
    if c.dry_run {
        super::allocator::release(c.store, &reserved);
        return Ok(KeyValue {
            key,
            value: encode(&v).into(),
            create_revision: 0,
            mod_revision: 0,
            version: 0,
        });
    }
    c.store
        .put(&key, encode(&v), Precondition::Absent)
        .map_err(|e| {
            super::allocator::release(c.store, &reserved);
            store_err(c.r, &name, e)
        })
}

pub fn get(c: &Ctx, name: &str) -> Result<Response, ApiError> {
    let kv = fetch(c, name)?;
    Ok(respond(c, StatusCode::OK, &decode(&kv), kv.mod_revision))
}

fn field_value<'a>(o: &'a Value, path: &str) -> Option<&'a str> {
    // Events' `source` field label is the reporting component (kube's
    // event field label conversion).
    let path = match path {
        "source" if o["kind"] == "Event" => "source.component",
        p => p,
    };
    path.split('.')
        .try_fold(o, |v, k| v.get(k))
        .and_then(Value::as_str)
}

fn field_match(sel: &str, o: &Value) -> bool {
    sel.split(',').filter(|t| !t.is_empty()).all(|t| {
        if let Some((k, v)) = t.split_once("!=") {
            field_value(o, k) != Some(v)
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            field_value(o, k).unwrap_or("") == v
        } else {
            false
        }
    })
}

/// What a list or watch selects (`labelSelector`, `fieldSelector`), parsed once.
#[derive(Clone)]
struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<String>,
}

impl Filter {
    fn new(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
        let labels = q
            .get("labelSelector")
            .map(|s| LabelSelector::parse(s))
            .transpose()
            .map_err(ApiError::bad_request)?;
        Ok(Filter {
            labels,
            fields: q.get("fieldSelector").cloned(),
        })
    }

    fn selects(&self, o: &Value) -> bool {
        self.labels
            .as_ref()
            .is_none_or(|l| l.matches(&o["metadata"]["labels"]))
            && self.fields.as_ref().is_none_or(|s| field_match(s, o))
    }
}

/// A continue token: where the next page starts (after `start`) and the revision the
/// first page was read at, opaque to clients.
fn continue_token(start: &str, rev: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "skiff/1", "rv": rev, "start": start}).to_string())
}

fn parse_continue(token: &str) -> Result<(String, i64), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v["v"] != "skiff/1" {
        return Err(bad());
    }
    let start = v["start"].as_str().map(str::to_string).ok_or_else(bad)?;
    let rv = v["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    Ok((start, rv))
}

/// List with selectors and paging (`limit`, `continue`): pages follow key order; a page
/// continues after the last key of the one before, at the first page's revision (410
/// once that is compacted). A page reads about `limit` keys, not the whole prefix.
pub fn list(c: &Ctx, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let cont = q
        .get("continue")
        .filter(|t| !t.is_empty())
        .map(|t| parse_continue(t))
        .transpose()?;
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let filter = Filter::new(q)?;
    let filtered = q.contains_key("labelSelector") || q.contains_key("fieldSelector");
    let prefix = c.r.prefix(c.ns);
    // Later pages are read at the first page's revision (kube's consistent paging).
    let (mut after, mut at) = match cont {
        Some((start, rv)) => (Some(start), rv),
        None => (None, 0),
    };
    let mut items: Vec<Value> = Vec::new();
    let mut last_key = String::new();
    let mut more = false;
    let mut remaining = 0i64;
    loop {
        let want = if limit == 0 { 0 } else { limit - items.len() };
        // With a selector not every key matches: read ahead in bigger pages.
        let fetch = match (want, filtered) {
            (0, _) => 0,
            (n, true) => n.max(256),
            (n, false) => n,
        };
        let page = c
            .store
            .range(&prefix, after.as_deref(), fetch, at)
            .map_err(|e| match (e, at) {
                (StoreError::Compacted { .. }, rv) if rv > 0 => ApiError::new(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                (e, _) => store_err(c.r, "", e),
            })?;
        at = page.revision;
        let n = page.kvs.len();
        for (i, kv) in page.kvs.iter().enumerate() {
            if limit > 0 && items.len() == limit {
                // Filled, with keys of this page left over.
                more = true;
                remaining = page.remaining + (n - i) as i64;
                break;
            }
            last_key = kv.key.clone();
            let o = decode(kv);
            if filter.selects(&o) {
                items.push(o);
            }
        }
        if more || page.remaining == 0 || fetch == 0 {
            break;
        }
        if limit > 0 && items.len() == limit {
            more = true;
            remaining = page.remaining;
            break;
        }
        after = Some(last_key.clone());
    }
    let mut meta = json!({"resourceVersion": at.to_string()});
    if more {
        meta["continue"] = json!(continue_token(&last_key, at));
        // kube-apiserver counts what is left only without selectors.
        if !filtered {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    if c.table {
        let mut t = table(c.r.kind, &items, at);
        t["metadata"] = meta;
        return Ok((
            StatusCode::OK,
            [("content-type", TABLE_CONTENT_TYPE)],
            t.to_string(),
        )
            .into_response());
    }
    let l = json!({"kind": format!("{}List", c.r.kind), "apiVersion": c.r.api_version(), "metadata": meta, "items": items});
    Ok(json_response(StatusCode::OK, &l))
}

/// Read-modify-write with the store's compare on mod_revision; `f` may fail the update.
/// How a write counts in managedFields: a plain write by the request's manager (to the
/// main resource or a subresource), or one that sets managedFields itself (apply).
#[derive(Clone, Copy)]
enum Track {
    Update(&'static str),
    Own,
}

fn modify(
    c: &Ctx,
    name: &str,
    f: impl FnMut(&Value) -> Result<Value, ApiError>,
    status_only: bool,
) -> Result<Response, ApiError> {
    let track = Track::Update(if status_only { "status" } else { "" });
    let (obj, rv) = modify_tracked(c, name, f, status_only, track)?;
    Ok(respond(c, StatusCode::OK, &obj, rv))
}

/// Replace an object's main resource (spec and metadata; its status is kept) or its
/// status subresource, as PUT does — for controllers, which update through here. The
/// object's resourceVersion is the precondition.
pub(crate) fn replace_value(
    c: &Ctx,
    name: &str,
    next: &Value,
    status: bool,
) -> Result<Value, ApiError> {
    let track = Track::Update(if status { "status" } else { "" });
    modify_tracked(c, name, |_| Ok(next.clone()), status, track).map(|(v, _)| v)
}

fn modify_tracked(
    c: &Ctx,
    name: &str,
    mut f: impl FnMut(&Value) -> Result<Value, ApiError>,
    status_only: bool,
    track: Track,
) -> Result<(Value, i64), ApiError> {
    let key = c.r.key(c.ns, name);
    // An unpinned write that meets a concurrent one is made again on the newer object
    // (kube's GuaranteedUpdate): with many writers on one object, after a few rounds
    // with a short random pause so they stop meeting.
    for attempt in 0..64 {
        if attempt >= 4 {
            let us = 200 + u64::from_str_radix(&random_hex(4), 16).unwrap_or(0) % 2000;
            std::thread::sleep(std::time::Duration::from_micros(us));
        }
        let cur_kv = fetch(c, name)?;
        let cur = decode(&cur_kv);
        let mut next = f(&cur)?;
        // Identity and bookkeeping are the server's.
        for k in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            if !cur["metadata"][k].is_null() {
                next["metadata"][k] = cur["metadata"][k].clone();
            }
        }
        next["apiVersion"] = json!(c.r.api_version());
        next["kind"] = json!(c.r.kind);
        let has_status = super::kinds::of(c.r.kind).has_status();
        if status_only {
            let status = next["status"].clone();
            next = cur.clone();
            next["status"] = status;
        } else {
            if has_status {
                next["status"] = cur["status"].clone();
            }
            // A namespace's spec.finalizers change only through its finalize subresource.
            if c.r.kind == "Namespace" && !matches!(&track, Track::Update("finalize")) {
                next["spec"]["finalizers"] = cur["spec"]["finalizers"].clone();
            }
            let gen = cur["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(if next["spec"] != cur["spec"] {
                gen + 1
            } else {
                gen
            });
        }
        if !status_only {
            super::kinds::of(c.r.kind).defaults(&mut next);
            super::kinds::of(c.r.kind).immutable(&cur, &next)?;
        }
        typed_check(c.r, &next)?;
        // A patch's fields are checked in what it makes (its body alone is partial).
        check_fields(c, &mut next, || {
            prune_unknown(c.r, &mut cur.clone()).unwrap_or_default()
        })?;
        if let Track::Update(sub) = track {
            // The client's copy of managedFields is not authoritative; the server's is.
            next["metadata"]["managedFields"] = cur["metadata"]["managedFields"].clone();
            super::apply::record_update(Some(&cur), &mut next, c.manager, &now_rfc3339(), sub);
        }
        let want_rv = next["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok());
        let pre = Precondition::Revision(want_rv.unwrap_or(cur_kv.mod_revision));
        if c.dry_run {
            if want_rv.is_some_and(|rv| rv != cur_kv.mod_revision) {
                return Err(ApiError::conflict_retry(c.r, name));
            }
            // What the write would store, at the object's current version.
            next["metadata"]["resourceVersion"] = json!(cur_kv.mod_revision.to_string());
            return Ok((next, cur_kv.mod_revision));
        }
        // Being deleted, past its grace period, and the last finalizer is gone: the
        // object goes now. (A pod in its grace period stays until the kubelet's delete.)
        let finalized = next["metadata"]["deletionTimestamp"].is_string()
            && next["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0
            && next["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
            // A namespace also waits for its spec.finalizers (the namespace controller
            // clears "kubernetes" once the namespace is empty).
            && (c.r.kind != "Namespace"
                || next["spec"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty()));
        if finalized {
            if let Some(gone) =
                remove_now(c.store, &key, Some(want_rv.unwrap_or(cur_kv.mod_revision)))
                    .map_err(|e| store_err(c.r, name, e))?
            {
                return Ok((gone, cur_kv.mod_revision));
            }
            continue;
        }
        match c.store.put(&key, encode(&next), pre) {
            Ok(kv) => return Ok((decode(&kv), kv.mod_revision)),
            // A concurrent writer got in between: retry only if the client did not pin a version.
            Err(StoreError::Conflict { .. }) if want_rv.is_none() => continue,
            Err(e) => return Err(store_err(c.r, name, e)),
        }
    }
    Err(store_err(
        c.r,
        name,
        StoreError::Conflict {
            key,
            expected: 0,
            actual: 0,
        },
    ))
}

/// PUT namespaces/NAME/finalize: only the body's spec.finalizers is written; a
/// terminating namespace left with no finalizers goes.
pub fn finalize(c: &Ctx, name: &str, body: &[u8]) -> Result<Response, ApiError> {
    let v = parse_body(c, body)?;
    let (obj, rv) = finalize_value(c, name, |_| v["spec"]["finalizers"].clone())?;
    Ok(respond(c, StatusCode::OK, &obj, rv))
}

/// PUT certificatesigningrequests/NAME/approval: only the body's status.conditions is
/// written (the Approved or Denied verdict; the certificate is the signer's, through
/// status).
pub fn approve(c: &Ctx, name: &str, body: &[u8]) -> Result<Response, ApiError> {
    let v = parse_body(c, body)?;
    let (obj, rv) = approve_value(c, name, &v["status"]["conditions"])?;
    Ok(respond(c, StatusCode::OK, &obj, rv))
}

/// A CertificateSigningRequest's status.conditions set to `conditions`.
pub(crate) fn approve_value(
    c: &Ctx,
    name: &str,
    conditions: &Value,
) -> Result<(Value, i64), ApiError> {
    // A verdict without times (protobuf bodies leave them to us) gets now.
    let now = now_rfc3339();
    let mut conditions = conditions.clone();
    for cond in conditions.as_array_mut().into_iter().flatten() {
        for t in ["lastUpdateTime", "lastTransitionTime"] {
            if cond[t].is_null() {
                cond[t] = json!(now);
            }
        }
        if cond["status"].is_null() {
            cond["status"] = json!("True");
        }
    }
    let set = |cur: &Value| {
        let mut next = cur.clone();
        next["status"]["conditions"] = conditions.clone();
        Ok(next)
    };
    modify_tracked(c, name, set, true, Track::Update("approval"))
}

/// A namespace's spec.finalizers replaced by `f` of the current ones (the namespace
/// controller takes out its own, "kubernetes", and leaves the rest).
pub(crate) fn finalize_value(
    c: &Ctx,
    name: &str,
    f: impl Fn(&Value) -> Value,
) -> Result<(Value, i64), ApiError> {
    let set = |cur: &Value| {
        let mut next = cur.clone();
        next["spec"]["finalizers"] = f(&cur["spec"]["finalizers"]);
        Ok(next)
    };
    modify_tracked(c, name, set, false, Track::Update("finalize"))
}

pub fn update(c: &Ctx, name: &str, body: &[u8], status_only: bool) -> Result<Response, ApiError> {
    let v = parse_body(c, body)?;
    if v["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    modify(c, name, |_| Ok(v.clone()), status_only)
}

/// Strategic merge patch directives that plain JSON merge would store as data.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| {
                !k.starts_with("$setElementOrder")
                    && k != "$patch"
                    && k != "$retainKeys"
                    && !k.starts_with("$deleteFromPrimitiveList")
            });
            for (_, x) in m.iter_mut() {
                strip_directives(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

pub fn patch(
    c: &Ctx,
    name: &str,
    content_type: &str,
    body: &[u8],
    status_only: bool,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            let manager = q
                .get("fieldManager")
                .filter(|m| !m.is_empty())
                .ok_or_else(|| ApiError::bad_request("PATCH with apply requires a fieldManager"))?
                .clone();
            let force = q.get("force").is_some_and(|f| f == "true");
            let applied: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid apply configuration: {e}")))?;
            if applied["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
            }
            let now = now_rfc3339();
            let exists = c
                .store
                .get(&c.r.key(c.ns, name))
                .map_err(|e| store_err(c.r, name, e))?;
            if exists.is_none() {
                let mut obj = super::apply::initial(&applied, &manager, &now);
                obj["metadata"]["name"] = json!(name);
                return create(c, &serde_json::to_vec(&obj).expect("serializes"));
            }
            let apply = |cur: &Value| super::apply::apply(cur, &applied, &manager, force, &now);
            let (obj, rv) = modify_tracked(c, name, apply, status_only, Track::Own)?;
            Ok(respond(c, StatusCode::OK, &obj, rv))
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            modify(c, name, |cur| {
                let mut doc = cur.clone();
                json_patch::patch(&mut doc, &p).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", format!("the patch cannot be applied: {e}")))?;
                let pinned = doc["metadata"]["resourceVersion"] != cur["metadata"]["resourceVersion"];
                Ok(unpinned(doc, pinned))
            }, status_only)
        }
        "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid strategic merge patch: {e}")))?;
            modify(c, name, |cur| {
                let mut doc = cur.clone();
                super::strategic::apply(&mut doc, &p).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string()))?;
                Ok(unpinned(doc, p["metadata"]["resourceVersion"].is_string()))
            }, status_only)
        }
        "application/merge-patch+json" => {
            let mut p: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            strip_directives(&mut p);
            modify(c, name, |cur| {
                let mut doc = cur.clone();
                json_patch::merge(&mut doc, &p);
                Ok(unpinned(doc, p["metadata"]["resourceVersion"].is_string()))
            }, status_only)
        }
        other => Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {other:?})"))),
    }
}

/// A patched object keeps a resourceVersion only if the patch set one: otherwise the
/// one it has is the current object's, and a write that meets a concurrent one is
/// retried on the newer object (kube-apiserver retries patches the same way) instead
/// of failing with a conflict the client never asked for.
fn unpinned(mut doc: Value, pinned: bool) -> Value {
    if !pinned {
        if let Some(m) = doc["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
    }
    doc
}

/// POST pods/{name}/binding: assign the pod to a node (what a scheduler does). A pod
/// already bound elsewhere is a conflict.
pub fn bind(c: &Ctx, name: &str, body: &[u8]) -> Result<Response, ApiError> {
    let b: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid Binding: {e}")))?;
    let node = b["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("Binding", name, "target.name: Required value"))?
        .to_string();
    if b["target"]["kind"]
        .as_str()
        .is_some_and(|k| !k.is_empty() && k != "Node")
    {
        return Err(ApiError::invalid(
            "Binding",
            name,
            "target.kind: Unsupported value: must be Node",
        ));
    }
    bind_pod(c.store, c.ns.unwrap_or("default"), name, &node, c.manager)?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &status))
}

/// Assign a pod to a node, as the pods/binding subresource does (and the scheduler, which
/// binds through here): spec.nodeName and PodScheduled=True in one compare-and-swap
/// write. A pod bound already, or being deleted, is a conflict.
pub(crate) fn bind_pod(
    store: &Store,
    ns: &str,
    name: &str,
    node: &str,
    manager: &str,
) -> Result<Value, ApiError> {
    let pods = resources::find("", "v1", "pods").expect("pods");
    let key = pods.key(Some(ns), name);
    let conflict = |why: String| {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"),
        )
    };
    for _ in 0..16 {
        let kv = store
            .get(&key)
            .map_err(|e| store_err(pods, name, e))?
            .ok_or_else(|| ApiError::not_found("pods", name))?;
        let cur = decode(&kv);
        if let Some(bound) = cur["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(conflict(format!(
                "pod {name} is already assigned to node \"{bound}\""
            )));
        }
        if cur["metadata"]["deletionTimestamp"].is_string() {
            return Err(conflict(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        let now = now_rfc3339();
        let mut next = cur.clone();
        next["spec"]["nodeName"] = json!(node);
        let mut conds: Vec<Value> = cur["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c["type"] != "PodScheduled");
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        next["status"]["conditions"] = json!(conds);
        super::apply::record_update(Some(&cur), &mut next, manager, &now, "binding");
        match store.put(&key, encode(&next), Precondition::Revision(kv.mod_revision)) {
            Ok(kv) => return Ok(decode(&kv)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_err(pods, name, e)),
        }
    }
    Err(ApiError::conflict_retry(pods, name))
}

/// Remove an object from the store now, releasing what it held.
pub(crate) fn remove_now(
    store: &Store,
    key: &str,
    rev: Option<i64>,
) -> Result<Option<Value>, StoreError> {
    let pre = rev.map_or(Precondition::None, Precondition::Revision);
    let prev = match store.delete(key, pre) {
        Ok(p) => p,
        // Gone or changed meanwhile: the caller looks again.
        Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let obj = decode(&prev);
    if obj["kind"] == "Service" {
        super::allocator::release(store, &super::allocator::held(&obj));
    }
    Ok(Some(obj))
}

/// The grace period a pod's deletion gets: the one asked for, else its spec's
/// terminationGracePeriodSeconds (30 by default); none for a pod that never reached a
/// node or has finished, as nothing has to stop.
pub(crate) fn pod_grace(pod: &Value, asked: Option<i64>) -> i64 {
    let unbound = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unbound || finished {
        return 0;
    }
    let g = asked
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    // A negative period means "the shortest": one second (as Kubernetes does).
    if g < 0 {
        1
    } else {
        g
    }
}

/// Mark `obj` as being deleted `grace` seconds from now; a later, shorter grace period
/// brings the end forward, a longer one changes nothing (false).
fn mark_deleted(obj: &mut Value, grace: i64) -> bool {
    let m = &obj["metadata"];
    if m["deletionTimestamp"].is_string()
        && m["deletionGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|cur| cur <= grace)
    {
        return false;
    }
    let gen = m["generation"].as_i64().unwrap_or(1);
    obj["metadata"]["deletionTimestamp"] = json!(rfc3339_in(grace));
    obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    obj["metadata"]["generation"] = json!(gen + 1);
    true
}

/// What a delete asks for (DeleteOptions and the query).
#[derive(Debug, Default)]
pub(crate) struct DeleteOptions {
    /// Background (the default), Foreground or Orphan.
    pub policy: String,
    /// gracePeriodSeconds (pods: their own when None).
    pub grace: Option<i64>,
    /// preconditions.uid
    pub uid: Option<String>,
    /// preconditions.resourceVersion
    pub resource_version: Option<i64>,
    pub dry_run: bool,
}

/// DELETE: a pod on a node is deleted gracefully (deletionTimestamp and
/// deletionGracePeriodSeconds set; the kubelet stops it and deletes it with grace 0);
/// objects with finalizers (or a Foreground delete) get a deletionTimestamp and go when
/// their finalizers are gone; namespaces terminate (the namespace controller empties
/// them); Orphan unlinks dependents first; Background (the default) deletes now and
/// leaves dependents to the garbage collector.
pub fn delete(
    c: &Ctx,
    name: &str,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let opts: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let policy = q
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| opts["propagationPolicy"].as_str())
        .or_else(|| match opts["orphanDependents"].as_bool() {
            Some(true) => Some("Orphan"),
            _ => None,
        })
        .unwrap_or("Background")
        .to_string();
    let grace = match q.get("gracePeriodSeconds") {
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds {g:?} is not a number"))
        })?),
        None => opts["gracePeriodSeconds"].as_i64(),
    };
    let o = DeleteOptions {
        policy,
        grace,
        uid: opts["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: match &opts["preconditions"]["resourceVersion"] {
            Value::Null => None,
            v => Some(v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "preconditions.resourceVersion {v} is not a resource version"
                ))
            })?),
        },
        // DeleteOptions may carry it too (kubectl sends it there).
        dry_run: c.dry_run
            || opts["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "All")),
    };
    let (code, obj) = delete_with(c, name, &o)?;
    Ok(json_response(code, &obj))
}

/// The deletion itself, for the HTTP handler and the controllers alike: 200 with the
/// object gone or in its grace period, 202 with it waiting for its finalizers.
pub(crate) fn delete_with(
    c: &Ctx,
    name: &str,
    o: &DeleteOptions,
) -> Result<(StatusCode, Value), ApiError> {
    let policy = if o.policy.is_empty() {
        "Background"
    } else {
        o.policy.as_str()
    };
    if !matches!(policy, "Background" | "Foreground" | "Orphan") {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy {policy:?} is not one of Background, Foreground, Orphan"
        )));
    }
    let key = c.r.key(c.ns, name);
    let kv = fetch(c, name)?;
    let mut obj = decode(&kv);
    if let Some(want) = &o.uid {
        if obj["metadata"]["uid"].as_str() != Some(want.as_str()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {}",
                    obj["metadata"]["uid"].as_str().unwrap_or("")
                ),
            ));
        }
    }
    if let Some(want) = o.resource_version.filter(|rv| *rv != kv.mod_revision) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                kv.mod_revision
            ),
        ));
    }
    if o.dry_run {
        // The object as it stands; nothing deleted, marked or unlinked.
        return Ok((StatusCode::OK, obj));
    }
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if policy == "Orphan" {
        orphan_dependents(c.store, &uid).map_err(|e| store_err(c.r, name, e))?;
    }
    let mut finalizers: Vec<Value> = obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if c.r.kind == "Namespace" {
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            obj["status"]["phase"] = json!("Terminating");
            let kv = c
                .store
                .put(&key, encode(&obj), Precondition::Revision(kv.mod_revision))
                .map_err(|e| store_err(c.r, name, e))?;
            obj = decode(&kv);
        }
        return Ok((StatusCode::OK, obj));
    }
    if policy == "Foreground" && !finalizers.contains(&json!("foregroundDeletion")) {
        finalizers.push(json!("foregroundDeletion"));
    }
    let grace = match c.r.kind {
        "Pod" => pod_grace(&obj, o.grace),
        _ => 0,
    };
    if finalizers.is_empty() && grace == 0 {
        let mut gone = remove_now(c.store, &key, Some(kv.mod_revision))
            .map_err(|e| store_err(c.r, name, e))?
            .ok_or_else(|| ApiError::conflict_retry(c.r, name))?;
        gone["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        return Ok((StatusCode::OK, gone));
    }
    let changed = mark_deleted(&mut obj, grace);
    let waits_for_finalizers = !finalizers.is_empty();
    let before = obj["metadata"]["finalizers"].clone();
    if waits_for_finalizers {
        obj["metadata"]["finalizers"] = json!(finalizers);
    }
    if !changed && obj["metadata"]["finalizers"] == before {
        return Ok((StatusCode::OK, obj));
    }
    let kv = c
        .store
        .put(&key, encode(&obj), Precondition::Revision(kv.mod_revision))
        .map_err(|e| store_err(c.r, name, e))?;
    // 202: the object is still there, waiting for its finalizers; 200: a pod in its
    // grace period.
    let code = match waits_for_finalizers {
        true => StatusCode::ACCEPTED,
        false => StatusCode::OK,
    };
    Ok((code, decode(&kv)))
}

/// Drop ownerReferences to `uid` from every object (kubectl delete --cascade=orphan).
fn orphan_dependents(store: &Store, uid: &str) -> Result<(), StoreError> {
    for kv in store.list("/registry/")?.0 {
        let mut cur = Some(kv);
        // A dependent that changes meanwhile is read again: it must not keep the link.
        while let Some(kv) = cur.take() {
            let mut o = decode(&kv);
            let Some(refs) = o["metadata"]["ownerReferences"].as_array() else {
                break;
            };
            if !refs.iter().any(|r| r["uid"] == uid) {
                break;
            }
            let kept: Vec<Value> = refs.iter().filter(|r| r["uid"] != uid).cloned().collect();
            if kept.is_empty() {
                o["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("ownerReferences"));
            } else {
                o["metadata"]["ownerReferences"] = json!(kept);
            }
            match store.put(&kv.key, encode(&o), Precondition::Revision(kv.mod_revision)) {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Conflict { .. }) => cur = store.get(&kv.key)?,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Newline-delimited watch events; from `resourceVersion` (history replay) or, without
/// one, the current objects as ADDED first. Ends after timeoutSeconds.
pub fn watch(c: &Ctx, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let filter = Filter::new(q)?;
    let from: i64 = q
        .get("resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let prefix = c.r.prefix(c.ns);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let (initial, start) = if from == 0 {
        let (kvs, rev) = c.store.list(&prefix).map_err(|e| store_err(c.r, "", e))?;
        (kvs.iter().map(decode).collect::<Vec<_>>(), rev)
    } else {
        (Vec::new(), from)
    };
    let w = match c.store.watch(&prefix, start.max(1)) {
        Ok(w) => w,
        // kube-apiserver's answer: 200 and one ERROR event with a 410 Expired Status,
        // which clients (client-go reflectors, kube-rs watchers) take as "relist".
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => return Ok(expired_watch(requested, compacted)),
        Err(e) => return Err(store_err(c.r, "", e)),
    };
    let store = c.store.clone();
    let (kind, table_mode, r) = (c.r.kind, c.table, c.r);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let frame = move |typ: &str, o: &Value, rv: i64| -> Bytes {
        let obj = if table_mode {
            table(kind, std::slice::from_ref(o), rv)
        } else {
            o.clone()
        };
        let mut s = json!({"type": typ, "object": obj}).to_string();
        s.push('\n');
        Bytes::from(s)
    };
    // A task, not a thread: an idle watch costs a few hundred bytes.
    tokio::spawn(async move {
        for o in &initial {
            if filter.selects(o) && tx.send(Ok(frame("ADDED", o, start))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
        let mut last_rv = start;
        loop {
            let next = tokio::select! {
                r = w.recv() => Some(r),
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => None,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            };
            let (queued, idle) = match next {
                Some(Ok(ev)) => (vec![ev], false),
                // The store lost the watch: say so, as kube-apiserver does, rather than
                // end the stream as if the watch had timed out.
                Some(Err(e)) => {
                    let _ = tx.send(Ok(failure_frame(r, e))).await;
                    return;
                }
                None => {
                    // A bookmark carries the store's revision where it is settled (every
                    // event up to it is queued here: send those first; etcd says so per
                    // watch), so an idle watch resumes from a revision compaction has
                    // not passed.
                    let mut queued = Vec::new();
                    if let Some(settled) = w.settled().or_else(|| store.settled_revision()) {
                        queued = match w.drain() {
                            Ok(q) => q,
                            Err(e) => {
                                let _ = tx.send(Ok(failure_frame(r, e))).await;
                                return;
                            }
                        };
                        last_rv = last_rv.max(settled);
                    }
                    (queued, true)
                }
            };
            for ev in queued {
                last_rv = last_rv.max(ev.revision());
                // As the client sees it through its selectors.
                if let Some((typ, obj)) = watch_event(&filter, &ev) {
                    if tx.send(Ok(frame(typ, &obj, ev.revision()))).await.is_err() {
                        return;
                    }
                }
            }
            if idle && bookmarks {
                let bm = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": last_rv.to_string()}}});
                if tx.send(Ok(Bytes::from(format!("{bm}\n")))).await.is_err() {
                    return;
                }
            }
        }
    });
    let ct = if c.table {
        TABLE_CONTENT_TYPE
    } else {
        "application/json"
    };
    Ok((
        StatusCode::OK,
        [("content-type", ct), ("transfer-encoding", "chunked")],
        body_stream(rx),
    )
        .into_response())
}

/// A store event as a watch event for a client with selectors `q` (kube-apiserver's
/// rules): an object that starts matching is ADDED, one that stops matching is DELETED
/// (its last matching state, at the event's revision), and one that never matched is
/// not sent.
fn watch_event(filter: &Filter, ev: &crate::store::Event) -> Option<(&'static str, Value)> {
    let old = ev.prev.as_ref().map(decode).filter(|o| filter.selects(o));
    let gone = |mut o: Value| {
        o["metadata"]["resourceVersion"] = json!(ev.revision().to_string());
        ("DELETED", o)
    };
    match ev.kind {
        EventKind::Delete => old.map(gone),
        EventKind::Put => {
            let new = decode(&ev.kv);
            match (old, filter.selects(&new)) {
                (Some(_), true) => Some(("MODIFIED", new)),
                (None, true) => Some(("ADDED", new)),
                (Some(o), false) => Some(gone(o)),
                (None, false) => None,
            }
        }
    }
}

/// The ERROR event that ends a watch the store lost.
fn failure_frame(r: &Resource, e: StoreError) -> Bytes {
    match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => expired_frame(requested, compacted),
        e => {
            let ev = json!({"type": "ERROR", "object": store_err(r, "", e).status()});
            Bytes::from(format!("{ev}\n"))
        }
    }
}

/// The ERROR event of a watch whose start (or resume point) is compacted.
fn expired_frame(requested: i64, compacted: i64) -> Bytes {
    let status = json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {requested} ({compacted})"),
        "reason": "Expired", "code": 410}});
    Bytes::from(format!("{status}\n"))
}

/// A watch from a compacted resourceVersion: what kube-apiserver streams.
fn expired_watch(requested: i64, compacted: i64) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        expired_frame(requested, compacted),
    )
        .into_response()
}

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
fn scale_of(o: &Value) -> Value {
    let selector = o["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let m = &o["metadata"];
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
           "spec": {"replicas": o["spec"]["replicas"].as_i64().unwrap_or(1)},
           "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector}})
}

/// GET, PUT and PATCH of the `scale` subresource (`kubectl scale`).
pub fn scale(
    c: &Ctx,
    name: &str,
    method: &axum::http::Method,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let cur = decode(&fetch(c, name)?);
    let wanted: Value = match *method {
        axum::http::Method::GET => return Ok(json_response(StatusCode::OK, &scale_of(&cur))),
        axum::http::Method::PUT => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid Scale: {e}")))?,
        axum::http::Method::PATCH => {
            let mut doc = scale_of(&cur);
            match content_type.split(';').next().unwrap_or("").trim() {
                "application/json-patch+json" => {
                    let p: json_patch::Patch = serde_json::from_slice(body)
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut doc, &p).map_err(|e| {
                        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string())
                    })?;
                }
                _ => {
                    let p: Value = serde_json::from_slice(body)
                        .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                    json_patch::merge(&mut doc, &p);
                }
            }
            doc
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "scale supports get, update and patch",
            ))
        }
    };
    let replicas = wanted["spec"]["replicas"]
        .as_i64()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                name,
                "spec.replicas: Invalid value: must be a non-negative integer",
            )
        })?;
    let (obj, _) = modify_tracked(
        c,
        name,
        |o| {
            let mut n = o.clone();
            n["spec"]["replicas"] = json!(replicas);
            n["metadata"]["resourceVersion"] = Value::Null;
            Ok(n)
        },
        false,
        Track::Update("scale"),
    )?;
    Ok(json_response(StatusCode::OK, &scale_of(&obj)))
}
