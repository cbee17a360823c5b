//! Reading CRI messages from JSON or YAML files the way protobuf's JSON mapping does
//! (what crictl's pod and container config files rely on): missing fields take their
//! zero value, and lowerCamelCase field names are accepted beside snake_case.
//! The generated CRI types derive serde but need every field; this adapter fills the
//! gaps using the field lists serde hands to `deserialize_struct`.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::{Error, Value};

/// Deserialize a CRI message from a JSON value, protobuf-JSON style.
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, Error> {
    T::deserialize(Lenient(Some(v)))
}

/// A value, or `None` for a field the input left out (its zero value).
struct Lenient(Option<Value>);

fn snake(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

struct Map {
    entries: std::vec::IntoIter<(String, Option<Value>)>,
    value: Option<Option<Value>>,
}

impl<'de> de::MapAccess<'de> for Map {
    type Error = Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(Lenient(self.value.take().flatten()))
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = Error;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some(v) => seed.deserialize(Lenient(Some(v))).map(Some),
            None => Ok(None),
        }
    }
}

fn map(entries: Vec<(String, Option<Value>)>) -> Map {
    Map {
        entries: entries.into_iter(),
        value: None,
    }
}

macro_rules! number {
    ($($method:ident => $visit:ident: $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            match self.0 {
                None | Some(Value::Null) => v.$visit(<$t>::default()),
                // Protobuf JSON writes 64-bit integers as strings.
                Some(Value::String(s)) => v.$visit(s.trim().parse::<$t>().map_err(|_| {
                    de::Error::custom(format!("expected a number, found {s:?}"))
                })?),
                Some(x) => x.$method(v),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Lenient {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            None | Some(Value::Null) => v.visit_unit(),
            Some(Value::Object(m)) => {
                v.visit_map(map(m.into_iter().map(|(k, x)| (k, Some(x))).collect()))
            }
            Some(Value::Array(a)) => v.visit_seq(Seq(a.into_iter())),
            Some(x) => x.deserialize_any(v),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            None | Some(Value::Null) => v.visit_none(),
            some => v.visit_some(Lenient(some)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let obj = match self.0 {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "{name}: expected an object, found {other}"
                )))
            }
        };
        let mut entries: Vec<(String, Option<Value>)> = Vec::new();
        for (k, x) in obj {
            let k = if fields.contains(&k.as_str()) {
                k
            } else {
                snake(&k)
            };
            if !fields.contains(&k.as_str()) {
                return Err(de::Error::custom(format!("{name}: unknown field {k:?}")));
            }
            entries.push((k, Some(x)));
        }
        for f in fields {
            if !entries.iter().any(|(k, _)| k == f) {
                entries.push((f.to_string(), None));
            }
        }
        v.visit_map(map(entries))
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            None | Some(Value::Null) => v.visit_map(map(Vec::new())),
            Some(Value::Object(m)) => {
                v.visit_map(map(m.into_iter().map(|(k, x)| (k, Some(x))).collect()))
            }
            Some(other) => Err(de::Error::custom(format!("expected a map, found {other}"))),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            None | Some(Value::Null) => v.visit_seq(Seq(Vec::new().into_iter())),
            Some(Value::Array(a)) => v.visit_seq(Seq(a.into_iter())),
            Some(other) => Err(de::Error::custom(format!("expected a list, found {other}"))),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            None | Some(Value::Null) => v.visit_str(""),
            Some(x) => x.deserialize_string(v),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_string(v)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            None | Some(Value::Null) => v.visit_bool(false),
            Some(x) => x.deserialize_bool(v),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        use base64::Engine;
        match self.0 {
            None | Some(Value::Null) => v.visit_byte_buf(Vec::new()),
            // Protobuf JSON writes bytes as base64.
            Some(Value::String(s)) => v.visit_byte_buf(
                base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .map_err(|e| de::Error::custom(format!("bytes: {e}")))?,
            ),
            Some(x) => x.deserialize_byte_buf(v),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_byte_buf(v)
    }

    number!(deserialize_i8 => visit_i8: i8, deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32, deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8, deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32, deserialize_u64 => visit_u64: u64,
        deserialize_f32 => visit_f32: f32, deserialize_f64 => visit_f64: f64);

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char unit unit_struct newtype_struct tuple tuple_struct enum identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1;

    #[test]
    fn crictl_style_configs() {
        let pod: v1::PodSandboxConfig = from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "attempt": 1},
            "logDirectory": "/tmp/logs",
            "labels": {"app.kubernetes.io/Name": "web"},
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        }))
        .unwrap();
        assert_eq!(pod.metadata.as_ref().unwrap().name, "web");
        assert_eq!(pod.log_directory, "/tmp/logs");
        assert_eq!(
            pod.labels["app.kubernetes.io/Name"], "web",
            "map keys are kept"
        );
        let ns = pod
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, 2);
        assert!(pod.dns_config.is_none() && pod.hostname.is_empty());

        let c: v1::ContainerConfig = from_value(serde_json::json!({
            "metadata": {"name": "c"}, "image": {"image": "busybox"},
            "command": ["sleep", "9"], "envs": [{"key": "A", "value": "1"}],
            "linux": {"resources": {"memory_limit_in_bytes": "1048576"}}
        }))
        .unwrap();
        assert_eq!(c.command, ["sleep", "9"]);
        assert_eq!(c.envs[0].value, "1");
        assert_eq!(
            c.linux.unwrap().resources.unwrap().memory_limit_in_bytes,
            1 << 20
        );
        let err = from_value::<v1::ContainerConfig>(serde_json::json!({"comand": ["x"]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field \"comand\""), "{err}");
    }
}
