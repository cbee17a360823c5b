//! The few fields of an object a controller pass reads from every object it looks at.
//! Decoding only these (serde skips the rest without building it) keeps a pass over
//! thousands of nodes or pods cheap; an object is decoded whole only to be changed.

use crate::store::KeyValue;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct View {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: Spec,
}

#[derive(Deserialize, Default)]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(rename = "deletionTimestamp")]
    pub deleted: Option<String>,
}

/// Spec fields of the kinds read this way (nodes, pods, leases).
#[derive(Deserialize, Default)]
pub struct Spec {
    /// Lease.
    #[serde(rename = "renewTime")]
    pub renew_time: Option<String>,
    /// Node.
    #[serde(default)]
    pub taints: Vec<Taint>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// Pod.
    #[serde(rename = "nodeName")]
    pub node_name: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct Taint {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub effect: String,
}

/// The view of a stored object (None if it is not a JSON object of that shape).
pub fn of(kv: &KeyValue) -> Option<View> {
    serde_json::from_slice(&kv.value).ok()
}

/// The object at `kv` with only the fields named in `mask` (a JSON object whose keys
/// are the fields kept; an object below a key keeps only its keys, for each element of
/// an array too; `true` keeps the whole value), and its resourceVersion. The rest is
/// skipped while parsing, never built: controllers that list every pod on each pass
/// held a tree of each whole pod (about ten times its JSON), which is what set the
/// control plane's peak memory.
pub fn masked(kv: &KeyValue, mask: &serde_json::Value) -> serde_json::Value {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(&kv.value);
    let mut v = Masked(mask)
        .deserialize(&mut de)
        .unwrap_or(serde_json::Value::Null);
    if v.is_object() {
        v["metadata"]["resourceVersion"] = serde_json::json!(kv.mod_revision.to_string());
    }
    v
}

/// A decoded object with only the fields named in `mask` (as [`masked`]): what a
/// controller wrote, kept in its cache in the form the cache holds.
pub fn mask_value(v: &serde_json::Value, mask: &serde_json::Value) -> serde_json::Value {
    use serde::de::DeserializeSeed;
    Masked(mask)
        .deserialize(v)
        .unwrap_or(serde_json::Value::Null)
}

/// What a controller pass reads of a pod (not its containers' images, env, commands,
/// volumes, managedFields…). An object decoded this way is read, never written back.
pub fn pod_fields() -> &'static serde_json::Value {
    static MASK: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    MASK.get_or_init(|| {
        serde_json::json!({
            "apiVersion": true, "kind": true,
            "metadata": {"name": true, "namespace": true, "uid": true, "labels": true,
                "annotations": true, "ownerReferences": true, "creationTimestamp": true,
                "deletionTimestamp": true, "generateName": true},
            "spec": {"nodeName": true, "hostname": true, "subdomain": true, "tolerations": true,
                "containers": {"name": true, "ports": true}},
            "status": {"phase": true, "podIP": true, "podIPs": true, "conditions": true,
                "containerStatuses": true, "initContainerStatuses": true}
        })
    })
}

struct Masked<'a>(&'a serde_json::Value);

impl<'de> serde::de::DeserializeSeed<'de> for Masked<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.0 {
            serde_json::Value::Object(fields) => d.deserialize_any(MaskVisitor(fields)),
            _ => serde_json::Value::deserialize(d),
        }
    }
}

struct MaskVisitor<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl<'de> serde::de::Visitor<'de> for MaskVisitor<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = a.next_key::<String>()? {
            match self.0.get(&k) {
                Some(sub) => {
                    let v = a.next_value_seed(Masked(sub))?;
                    out.insert(k, v);
                }
                None => {
                    a.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(serde_json::Value::Object(out))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = a.next_element_seed(MaskSeed(self.0))? {
            out.push(v);
        }
        Ok(serde_json::Value::Array(out))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
}

/// The same object mask for each element of an array.
struct MaskSeed<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl<'de> serde::de::DeserializeSeed<'de> for MaskSeed<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MaskVisitor(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_masked_decode_keeps_exactly_the_named_fields() {
        let pod = json!({"metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": [{"x": 1}]},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "name": "http"}]}],
                     "volumes": [{"name": "v"}]},
            "status": {"phase": "Running", "podIP": null, "conditions": [{"type": "Ready", "status": "True"}]}});
        let kv = KeyValue {
            key: "/registry/core/pods/d/p".into(),
            value: serde_json::to_vec(&pod).unwrap().into(),
            create_revision: 3,
            mod_revision: 7,
            version: 2,
        };
        let got = masked(&kv, pod_fields());
        assert_eq!(
            got,
            json!({"metadata": {"name": "p", "labels": {"a": "b"}, "resourceVersion": "7"},
                "spec": {"nodeName": "n", "containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]},
                "status": {"phase": "Running", "podIP": null, "conditions": [{"type": "Ready", "status": "True"}]}})
        );
    }
}
