//! Pulling from an OCI distribution registry: reference parsing, bearer-token and basic
//! auth challenges, manifest lists resolved to linux/<arch>, every blob verified by
//! digest as it streams into the store.

use super::Store;
use crate::error::{Error, Result};
use base64::Engine;
use serde_json::Value;
use sha2::Digest;

/// `[registry/]repository[:tag|@digest]`, normalized as Docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    /// A tag or a `sha256:` digest.
    pub reference: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = || Error::InvalidConfig(format!("invalid image reference {s:?}"));
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad());
        }
        let (name, reference) = match s.split_once('@') {
            Some((n, d)) => (n, d.to_string()),
            None => match s.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, t.to_string()),
                _ => (s, "latest".to_string()),
            },
        };
        let (registry, repo) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (
                "docker.io".to_string(),
                if name.contains('/') {
                    name.to_string()
                } else {
                    format!("library/{name}")
                },
            ),
        };
        if repo.is_empty()
            || reference.is_empty()
            || !repo
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        {
            return Err(bad());
        }
        Ok(Reference {
            registry,
            repository: repo,
            reference,
        })
    }

    /// The canonical name images are tagged with in the store.
    pub fn name(&self) -> String {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!(
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }

    fn endpoint(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

/// Progress callback: (digest, bytes so far, total).
pub type Progress = Box<dyn FnMut(&str, u64, u64)>;

#[derive(Default)]
pub struct PullOptions {
    /// Plain HTTP (a registry on loopback without TLS).
    pub insecure: bool,
    /// Mirrors of the image's registry (base URLs, `http://host:port`), tried in order
    /// before it, as containerd's mirrors; the image keeps its own name.
    pub mirrors: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Called as bytes arrive.
    pub progress: Option<Progress>,
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

struct Client<'a> {
    agent: ureq::Agent,
    base: String,
    reference: &'a Reference,
    opts: &'a mut PullOptions,
    auth: Option<String>,
}

fn challenge_params(h: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rest = h.split_once(' ').map(|x| x.1).unwrap_or("");
    let mut cur = rest;
    while let Some((k, v)) = cur.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let v = v.trim_start();
        let (val, next) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), &q[(end + 1).min(q.len())..])
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].to_string(), &v[end..])
        };
        out.push((k, val));
        cur = next;
    }
    out
}

impl Client<'_> {
    fn send(&self, url: &str, accept: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(url).header("Accept", accept);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        req.call()
            .map_err(|e| Error::Registry(format!("GET {url}: {e}")))
    }

    /// GET with one round of auth negotiation on 401.
    fn get(&mut self, path: &str, accept: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(&url, accept)?;
        if resp.status() != 401 || self.auth.is_some() {
            return Ok(resp);
        }
        let header = resp
            .headers()
            .get("www-authenticate")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let basic = match (&self.opts.username, &self.opts.password) {
            (Some(u), Some(p)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            _ => None,
        };
        if header.to_ascii_lowercase().starts_with("bearer") {
            let params = challenge_params(&header);
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let realm = get("realm").ok_or_else(|| {
                Error::Registry(format!("bearer challenge without realm: {header}"))
            })?;
            let mut token_url = format!(
                "{realm}?scope={}",
                get("scope")
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository))
            );
            if let Some(s) = get("service") {
                token_url.push_str(&format!("&service={s}"));
            }
            let mut req = self.agent.get(&token_url);
            if let Some(b) = &basic {
                req = req.header("Authorization", b);
            }
            let mut tr = req
                .call()
                .map_err(|e| Error::Registry(format!("token request {token_url}: {e}")))?;
            if !tr.status().is_success() {
                return Err(Error::Registry(format!(
                    "token request {token_url}: HTTP {}",
                    tr.status()
                )));
            }
            let v: Value = serde_json::from_slice(
                &tr.body_mut()
                    .read_to_vec()
                    .map_err(|e| Error::Registry(e.to_string()))?,
            )
            .unwrap_or_default();
            let token = v["token"]
                .as_str()
                .or(v["access_token"].as_str())
                .ok_or_else(|| Error::Registry("token response without a token".into()))?;
            self.auth = Some(format!("Bearer {token}"));
        } else if header.to_ascii_lowercase().starts_with("basic") {
            self.auth = Some(basic.ok_or_else(|| {
                Error::Registry(format!("{} requires credentials", self.reference.registry))
            })?);
        } else {
            return Err(Error::Registry(format!("{url}: unauthorized ({header})")));
        }
        self.send(&url, accept)
    }

    fn manifest(&mut self, reference: &str, store: &Store) -> Result<String> {
        let path = format!("/v2/{}/manifests/{reference}", self.reference.repository);
        let mut resp = self.get(&path, ACCEPT)?;
        if !resp.status().is_success() {
            return Err(Error::NotFound(format!(
                "manifest {}: HTTP {}",
                self.reference.name(),
                resp.status()
            )));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .map_err(|e| Error::Registry(format!("read manifest: {e}")))?;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        if reference.starts_with("sha256:") && reference != digest {
            return Err(Error::InvalidConfig(format!(
                "manifest digest mismatch: asked {reference}, got {digest}"
            )));
        }
        store.put_blob(Some(&digest), body.as_slice())?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::InvalidConfig(format!("manifest is not JSON: {e}")))?;
        if v.get("manifests").is_some() {
            let m = super::store::pick_platform(&v).ok_or_else(|| {
                Error::NotFound(format!(
                    "{} has no linux/{} image",
                    self.reference.name(),
                    super::store::native_arch()
                ))
            })?;
            let d = m["digest"].as_str().unwrap_or("").to_string();
            return self.manifest(&d, store);
        }
        Ok(digest)
    }

    fn blob(&mut self, digest: &str, size: u64, store: &Store) -> Result<()> {
        if store.blob_path(digest)?.exists() {
            return Ok(());
        }
        let path = format!("/v2/{}/blobs/{digest}", self.reference.repository);
        let resp = self.get(&path, "*/*")?;
        if !resp.status().is_success() {
            return Err(Error::NotFound(format!(
                "blob {digest}: HTTP {}",
                resp.status()
            )));
        }
        let mut reader = resp.into_body().into_reader();
        let mut counted = Counting {
            inner: &mut reader,
            done: 0,
            total: size,
            digest,
            progress: self.opts.progress.take(),
        };
        let r = store.put_blob(Some(digest), &mut counted);
        self.opts.progress = counted.progress.take();
        r.map(drop)
    }
}

struct Counting<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    digest: &'a str,
    progress: Option<Progress>,
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if let Some(p) = self.progress.as_mut() {
            p(self.digest, self.done, self.total);
        }
        Ok(n)
    }
}

impl Store {
    /// Pull `reference` into the store and tag it; returns the stored name.
    pub fn pull(&self, reference: &str, opts: &mut PullOptions) -> Result<String> {
        let r = Reference::parse(reference)?;
        let scheme = if opts.insecure { "http" } else { "https" };
        let upstream = format!("{scheme}://{}", r.endpoint());
        let mut bases: Vec<String> = opts
            .mirrors
            .iter()
            .map(|m| m.trim_end_matches('/').to_string())
            .collect();
        bases.push(upstream);
        // Each in turn; the error says what every one answered.
        let mut failures = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            match self.pull_from(&r, base, opts) {
                Ok(name) => return Ok(name),
                Err(e) if bases.len() == 1 => return Err(e),
                Err(e) => {
                    let which = if i + 1 < bases.len() {
                        "mirror"
                    } else {
                        "registry"
                    };
                    failures.push(format!("{which} {base}: {e}"));
                }
            }
        }
        Err(Error::NotFound(failures.join("; ")))
    }

    fn pull_from(&self, r: &Reference, base: &str, opts: &mut PullOptions) -> Result<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(600)))
            .build()
            .into();
        let mut c = Client {
            agent,
            base: base.to_string(),
            reference: r,
            opts,
            auth: None,
        };
        let manifest = c.manifest(&r.reference, self)?;
        let m = self.read_json(&manifest)?;
        let mut blobs = vec![(
            m["config"]["digest"].as_str().unwrap_or("").to_string(),
            m["config"]["size"].as_u64().unwrap_or(0),
        )];
        blobs.extend(m["layers"].as_array().into_iter().flatten().map(|l| {
            (
                l["digest"].as_str().unwrap_or("").to_string(),
                l["size"].as_u64().unwrap_or(0),
            )
        }));
        for (d, size) in blobs {
            c.blob(&d, size, self)?;
        }
        let name = r.name();
        self.tag(&name, &manifest)?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("docker.io", "library/busybox", "latest")
        );
        assert_eq!(r.name(), "docker.io/library/busybox:latest");
        let r = Reference::parse("127.0.0.1:5000/skiff/busybox:v1").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "skiff/busybox", "v1")
        );
        let r = Reference::parse("localhost/app@sha256:abc").unwrap();
        assert_eq!(r.reference, "sha256:abc");
        assert_eq!(r.name(), "localhost/app@sha256:abc");
        assert!(Reference::parse("Upper/Case").is_err());
        assert!(Reference::parse("").is_err());
    }

    #[test]
    fn bearer_challenge() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
    }
}
