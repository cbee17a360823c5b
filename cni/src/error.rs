//! CNI errors: the spec's well-known codes plus plugin-specific ones (>= 100), printed
//! as the spec's error JSON on stdout with a non-zero exit.

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI version: {0}")]
    IncompatibleVersion(String),
    #[error("unsupported field in network configuration: {0}")]
    UnsupportedField(String),
    #[error("container unknown or does not exist: {0}")]
    UnknownContainer(String),
    #[error("invalid necessary environment variables: {0}")]
    InvalidEnv(String),
    #[error("I/O failure: {0}")]
    Io(String),
    #[error("failed to decode content: {0}")]
    Decode(String),
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    #[error("no IP addresses available in range {0}")]
    IpamExhausted(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("nftables: {0}")]
    Nft(String),
}

impl CniError {
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion(_) => 1,
            CniError::UnsupportedField(_) => 2,
            CniError::UnknownContainer(_) => 3,
            CniError::InvalidEnv(_) => 4,
            CniError::Io(_) => 5,
            CniError::Decode(_) => 6,
            CniError::InvalidConfig(_) => 7,
            CniError::IpamExhausted(_) => 110,
            CniError::Netlink(_) => 111,
            CniError::Nft(_) => 112,
        }
    }

    pub fn to_json(&self, version: &str) -> serde_json::Value {
        serde_json::json!({"cniVersion": version, "code": self.code(), "msg": self.to_string()})
    }
}

impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> Self {
        CniError::Io(e.to_string())
    }
}

impl From<rtnetlink::Error> for CniError {
    fn from(e: rtnetlink::Error) -> Self {
        CniError::Netlink(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CniError>;
