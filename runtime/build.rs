//! Builds skiff-exec (stub/exec_stub.rs), the static no_std program every container
//! process is started through; the runtime embeds it. x86_64 Linux only: elsewhere the
//! runtime re-executes itself from a protected copy instead (exeseal).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=stub/exec_stub.rs");
    println!("cargo::rustc-check-cfg=cfg(skiff_exec_stub)");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !(target.starts_with("x86_64-") && target.contains("linux")) {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("skiff-exec");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--target",
            &target,
        ])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=s",
            "-C",
            "relocation-model=static",
        ])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args([
            "-C",
            "link-arg=-static",
            "-C",
            "strip=symbols",
            "-C",
            "debuginfo=0",
        ])
        .arg("-o")
        .arg(&out)
        .arg("stub/exec_stub.rs")
        // Cargo's flags for the runtime (e.g. incremental) are not for this program.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run rustc for stub/exec_stub.rs");
    assert!(status.success(), "building stub/exec_stub.rs failed");
    println!("cargo:rustc-cfg=skiff_exec_stub");
}
