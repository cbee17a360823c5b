//! OCI images: a content-addressed blob store (sha256, verified on write), import of OCI
//! image layout archives, layers unpacked once into directories usable as overlayfs lower
//! dirs, and the image config turned into container defaults.
//!
//! Layout under the store root:
//! `blobs/sha256/<hex>` · `layers/<diff-id hex>/` · `refs.json` (name → manifest digest).

mod config;
pub mod error;
mod registry;
mod store;
mod unpack;

pub use config::ImageConfig;
pub use error::{Error, Result};
pub use registry::{Progress, PullOptions, Reference};
pub use store::{ImageInfo, Store};
pub use unpack::{apply_layer, Mode};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
