//! The parts of an OCI image config a container starts from.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(default, rename = "type")]
    pub typ: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    /// argv as Kubernetes/Docker compute it: `command` replaces the entrypoint, `args`
    /// replaces the cmd; with only `args`, they follow the image entrypoint.
    pub fn argv(&self, command: &[String], args: &[String]) -> Vec<String> {
        let ep = self.config.entrypoint.clone().unwrap_or_default();
        let cmd = self.config.cmd.clone().unwrap_or_default();
        match (command.is_empty(), args.is_empty()) {
            (false, _) => command.iter().chain(args).cloned().collect(),
            (true, false) => ep.into_iter().chain(args.iter().cloned()).collect(),
            (true, true) => ep.into_iter().chain(cmd).collect(),
        }
    }

    pub fn env(&self) -> Vec<String> {
        self.config.env.clone().unwrap_or_default()
    }

    pub fn working_dir(&self) -> String {
        self.config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_rules() {
        let c: ImageConfig = serde_json::from_str(
            r#"{"config":{"Entrypoint":["/ep"],"Cmd":["--def"],"WorkingDir":""}}"#,
        )
        .unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(c.argv(&[], &[]), s(&["/ep", "--def"]));
        assert_eq!(c.argv(&[], &s(&["x"])), s(&["/ep", "x"]));
        assert_eq!(
            c.argv(&s(&["sh"]), &s(&["-c", "true"])),
            s(&["sh", "-c", "true"])
        );
        assert_eq!(c.working_dir(), "/");
    }
}
