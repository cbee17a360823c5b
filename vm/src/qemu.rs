//! QEMU command lines and the accelerator probe.

use crate::hub::Port;
use crate::image::Image;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct VmSpec<'a> {
    pub name: &'a str,
    pub index: usize,
    pub ip: &'a str,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: &'a str,
    pub dir: &'a Path,
    pub workspace: &'a Path,
    pub port: Option<Port>,
    /// A second link, QEMU user networking with `restrict=on` (nothing leaves it), whose
    /// host port 127.0.0.1:N reaches the API server at the guest's 10.0.2.15:6443.
    pub api_forward: Option<u16>,
    /// On the same link: host port 127.0.0.1:N to the guest's registry (10.0.2.15:5000).
    pub registry_forward: Option<u16>,
}

/// The MAC of the host-forwarded link (the guest finds the link by it).
pub const FORWARD_MAC: &str = "52:54:00:99:01:01";

pub fn mac(index: usize) -> String {
    format!("52:54:00:99:00:{:02x}", index + 1)
}

pub fn agent_socket(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.agent"))
}
pub fn console_log(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.console"))
}
pub fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

pub fn command(img: &Image, vm: &VmSpec) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    let accel = if vm.accel == "kvm" {
        "kvm"
    } else {
        "tcg,thread=multi"
    };
    c.args([
        "-name",
        vm.name,
        "-machine",
        "q35",
        "-accel",
        accel,
        "-cpu",
        "max",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    c.args([
        "-smp",
        &vm.cpus.to_string(),
        "-m",
        &format!("{}M", vm.memory_mb),
    ]);
    c.arg("-kernel")
        .arg(&img.kernel)
        .arg("-initrd")
        .arg(&img.initramfs);
    c.args([
        "-append",
        &format!(
            "console=ttyS0 quiet panic=-1 rdinit=/init skiff.name={} skiff.ip={}",
            vm.name, vm.ip
        ),
    ]);
    c.arg("-serial")
        .arg(format!("file:{}", console_log(vm.dir, vm.name).display()));
    c.args(["-device", "virtio-serial-pci,id=vser0"]);
    c.arg("-chardev").arg(format!(
        "socket,id=agent,path={},server=on,wait=off",
        agent_socket(vm.dir, vm.name).display()
    ));
    c.args([
        "-device",
        &format!(
            "virtserialport,bus=vser0.0,chardev=agent,name={}",
            crate::agent::PORT_NAME
        ),
    ]);
    c.arg("-fsdev").arg(format!(
        "local,id=ws,path={},security_model=none,readonly=on",
        vm.workspace.display()
    ));
    c.args(["-device", "virtio-9p-pci,fsdev=ws,mount_tag=skiff"]);
    if let Some(p) = vm.port {
        c.arg("-netdev").arg(format!(
            "dgram,id=net0,local.type=inet,local.host=127.0.0.1,local.port={},remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            p.vm, p.hub
        ));
        c.args([
            "-device",
            &format!("virtio-net-pci,netdev=net0,mac={}", mac(vm.index)),
        ]);
    }
    if let Some(p) = vm.api_forward {
        let mut net = format!(
            "user,id=fwd0,restrict=on,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:{p}-10.0.2.15:6443"
        );
        if let Some(r) = vm.registry_forward {
            net.push_str(&format!(",hostfwd=tcp:127.0.0.1:{r}-10.0.2.15:5000"));
        }
        c.arg("-netdev").arg(net);
        c.args([
            "-device",
            &format!("virtio-net-pci,netdev=fwd0,mac={FORWARD_MAC}"),
        ]);
    }
    c.arg("-pidfile").arg(pid_file(vm.dir, vm.name));
    c.arg("-daemonize");
    c
}

/// /dev/kvm is usable for ioctls (it may exist and still hang a guest: the caller probes).
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}
