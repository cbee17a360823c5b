//! skiff-control: the master node of Skiff. So far: the embedded MVCC store with watch
//! (`store`), the foundation the API server, scheduler and controllers are built on.

pub mod apiserver;
pub mod controllers;
pub mod pki;
pub mod scheduler;
pub mod store;
pub mod token;
