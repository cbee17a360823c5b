//! The OCI seccomp object compiled to a classic-BPF filter for seccomp(2).
//!
//! Layout: check the audit arch (foreign arches and the x32 ABI get the "bad arch"
//! action, kill, as libseccomp does), then one block per syscall name in profile order:
//! `ld nr; jeq NR; ja next; <argument checks>; ret ACTION`, and finally the default.
//! Argument checks compare 64-bit values as two 32-bit halves.

use crate::error::{Error, Result};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

/// struct sock_filter, laid out as the kernel expects.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JA: u16 = 0x05;
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// seccomp(2) flag: return a notification fd for SCMP_ACT_NOTIFY.
pub const FLAG_NEW_LISTENER: u32 = 1 << 3;
pub const RET_ALLOW: u32 = 0x7fff_0000;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7;
/// On x86_64, x32-ABI syscalls carry this bit in nr.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg(i: usize, hi: bool) -> u32 {
    16 + 8 * i as u32 + if hi { 4 } else { 0 }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    let data = errno.unwrap_or(libc::EPERM as u32) & 0xffff;
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data,
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => RET_USER_NOTIF,
    })
}

/// Jump targets inside one condition, resolved when the block is assembled.
#[derive(Clone, Copy)]
enum T {
    Next,
    Pass,
    Fail,
}

struct Ins {
    code: u16,
    jt: T,
    jf: T,
    k: u32,
}

fn ld(k: u32) -> Ins {
    Ins {
        code: LD_W_ABS,
        jt: T::Next,
        jf: T::Next,
        k,
    }
}
fn j(code: u16, k: u32, jt: T, jf: T) -> Ins {
    Ins { code, jt, jf, k }
}

/// Instructions for one argument condition; `Pass` continues, `Fail` skips the block.
fn condition(index: usize, op: LinuxSeccompOperator, value: u64, value_two: u64) -> Vec<Ins> {
    let (vh, vl) = ((value >> 32) as u32, value as u32);
    let (hi, lo) = (off_arg(index, true), off_arg(index, false));
    use LinuxSeccompOperator::*;
    use T::*;
    match op {
        ScmpCmpEq => vec![
            ld(hi),
            j(JEQ_K, vh, Next, Fail),
            ld(lo),
            j(JEQ_K, vl, Pass, Fail),
        ],
        ScmpCmpNe => vec![
            ld(hi),
            j(JEQ_K, vh, Next, Pass),
            ld(lo),
            j(JEQ_K, vl, Fail, Pass),
        ],
        ScmpCmpGt => vec![
            ld(hi),
            j(JGT_K, vh, Pass, Next),
            j(JEQ_K, vh, Next, Fail),
            ld(lo),
            j(JGT_K, vl, Pass, Fail),
        ],
        ScmpCmpGe => vec![
            ld(hi),
            j(JGT_K, vh, Pass, Next),
            j(JEQ_K, vh, Next, Fail),
            ld(lo),
            j(JGE_K, vl, Pass, Fail),
        ],
        ScmpCmpLt => vec![
            ld(hi),
            j(JGT_K, vh, Fail, Next),
            j(JEQ_K, vh, Next, Pass),
            ld(lo),
            j(JGE_K, vl, Fail, Pass),
        ],
        ScmpCmpLe => vec![
            ld(hi),
            j(JGT_K, vh, Fail, Next),
            j(JEQ_K, vh, Next, Pass),
            ld(lo),
            j(JGT_K, vl, Fail, Pass),
        ],
        ScmpCmpMaskedEq => {
            let (th, tl) = ((value_two >> 32) as u32, value_two as u32);
            vec![
                ld(hi),
                j(AND_K, vh, Next, Next),
                j(JEQ_K, th, Next, Fail),
                ld(lo),
                j(AND_K, vl, Next, Next),
                j(JEQ_K, tl, Pass, Fail),
            ]
        }
    }
}

/// Compile a profile. Syscall names unknown on this architecture are skipped, as runc does.
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<SockFilter>> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut out = vec![
        SockFilter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: OFF_ARCH,
        },
        SockFilter {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: NATIVE_ARCH,
        },
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: RET_KILL_PROCESS,
        },
        SockFilter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: OFF_NR,
        },
    ];
    if cfg!(target_arch = "x86_64") {
        out.push(SockFilter {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        });
        out.push(SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: RET_KILL_PROCESS,
        });
    }
    for rule in s.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default && rule.args().as_ref().is_none_or(|a| a.is_empty()) {
            continue; // same as falling through to the default
        }
        for name in rule.names() {
            let Some(nr) = crate::syscalls::number(name) else {
                continue;
            };
            let mut body: Vec<Ins> = Vec::new();
            let mut marks = Vec::new(); // (start, end) of each condition
            for a in rule.args().iter().flatten() {
                if a.index() > 5 {
                    return Err(Error::InvalidConfig(format!(
                        "seccomp rule for {name}: argument index {} is out of range 0..=5",
                        a.index()
                    )));
                }
                let c = condition(a.index(), a.op(), a.value(), a.value_two().unwrap_or(0));
                let start = body.len();
                body.extend(c);
                marks.push((start, body.len()));
            }
            // ld nr; jeq nr → skip the ja; ja → past this block
            let block_len = 3 + body.len() + 1;
            out.push(SockFilter {
                code: LD_W_ABS,
                jt: 0,
                jf: 0,
                k: OFF_NR,
            });
            out.push(SockFilter {
                code: JEQ_K,
                jt: 1,
                jf: 0,
                k: nr as u32,
            });
            out.push(SockFilter {
                code: JA,
                jt: 0,
                jf: 0,
                k: (block_len - 3) as u32,
            });
            let ret_at = body.len(); // index of the ret inside the body
            for (i, ins) in body.iter().enumerate() {
                let (_, end) = *marks
                    .iter()
                    .find(|(s, e)| i >= *s && i < *e)
                    .expect("in a condition");
                let resolve = |t: T| -> u8 {
                    let target = match t {
                        T::Next => i + 1,
                        T::Pass => end,
                        T::Fail => ret_at + 1,
                    };
                    u8::try_from(target - i - 1).expect("condition jumps are short")
                };
                out.push(SockFilter {
                    code: ins.code,
                    jt: resolve(ins.jt),
                    jf: resolve(ins.jf),
                    k: ins.k,
                });
            }
            out.push(SockFilter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: act,
            });
        }
    }
    out.push(SockFilter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: default,
    });
    if out.len() > 4096 {
        return Err(Error::InvalidConfig(format!(
            "seccomp profile compiles to {} instructions, above the kernel limit of 4096",
            out.len()
        )));
    }
    Ok(out)
}

/// Whether any rule (or the default) hands syscalls to a user-space agent.
pub fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The agent's socket when the profile notifies: required then (the notifications would
/// otherwise wait for ever), as runc requires it.
pub fn listener(s: &LinuxSeccomp) -> Result<Option<std::path::PathBuf>> {
    let path = s
        .listener_path()
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    match (uses_notify(s), path) {
        (true, None) => Err(Error::InvalidConfig(
            "linux.seccomp uses SCMP_ACT_NOTIFY but has no listenerPath".into(),
        )),
        (true, Some(p)) => Ok(Some(p)),
        (false, _) => Ok(None),
    }
}

/// Send the notification fd to the agent at `path`, with the container process state
/// (runtime-spec: containerProcessState) in the same message.
pub fn send_to_listener(
    path: &std::path::Path,
    fd: std::os::fd::RawFd,
    pid: i32,
    metadata: Option<&str>,
    state: &serde_json::Value,
) -> Result<()> {
    use crate::error::Context;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let msg = serde_json::json!({
        "ociVersion": crate::config_json::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": metadata.unwrap_or(""),
        "state": state,
    });
    let body = serde_json::to_vec(&msg).expect("state serializes");
    let sock = std::os::unix::net::UnixStream::connect(path)
        .step(|| format!("connect to seccomp listener {}", path.display()))?;
    let fds = [fd];
    let iov = [std::io::IoSlice::new(&body)];
    sendmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .step(|| format!("send the seccomp fd to {}", path.display()))?;
    Ok(())
}

/// seccomp(2) filter flags from the profile.
pub fn flags(s: &LinuxSeccomp) -> u32 {
    s.flags().iter().flatten().fold(0, |acc, f| {
        acc | match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            _ => 0,
        }
    })
}

/// Install a compiled filter on the calling thread (no allocation: safe after fork).
/// With FLAG_NEW_LISTENER the result is the notification fd.
pub fn install(prog: &[SockFilter], flags: u32) -> nix::Result<i32> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags as libc::c_long,
            &fprog as *const SockFprog,
        )
    };
    nix::errno::Errno::result(r).map(|v| v as i32)
}

/// Syscalls the default profile refuses (EPERM), each unless the container holds the
/// capability that makes it legitimate (as Docker's default profile reasons): kernel
/// modules, kexec, reboot, clocks, mounts and namespaces, keyrings, BPF, perf, and the
/// syscalls that reach across processes or into the host's filesystem by handle.
const DEFAULT_DENY: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "add_key",
            "keyctl",
            "request_key",
            "kcmp",
            "lookup_dcookie",
            "nfsservctl",
            "get_kernel_syms",
            "query_module",
            "create_module",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "vm86",
            "vm86old",
            "userfaultfd",
            "open_by_handle_at",
        ],
    ),
    (
        "CAP_SYS_MODULE",
        &["init_module", "finit_module", "delete_module"],
    ),
    ("CAP_SYS_BOOT", &["reboot", "kexec_load", "kexec_file_load"]),
    (
        "CAP_SYS_TIME",
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
        ],
    ),
    (
        "CAP_SYS_ADMIN",
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "quotactl",
            "name_to_handle_at",
            "swapon",
            "swapoff",
            "bpf",
            "perf_event_open",
        ],
    ),
    ("CAP_SYS_PTRACE", &["process_vm_readv", "process_vm_writev"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_SYS_NICE", &["mbind", "set_mempolicy", "move_pages"]),
];

/// Skiff's default seccomp profile (OCI `linux.seccomp` JSON) for a container holding
/// `caps`: allow by default, refuse the syscalls above with EPERM.
pub fn default_profile(caps: &[String]) -> serde_json::Value {
    let names: Vec<&str> = DEFAULT_DENY
        .iter()
        .filter(|(cap, _)| cap.is_empty() || !caps.iter().any(|c| c == cap))
        .flat_map(|(_, n)| n.iter().copied())
        .collect();
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a filter over a seccomp_data the way the kernel does.
    fn run(p: &[SockFilter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u32; 16];
        data[0] = nr;
        data[1] = arch;
        for (i, a) in args.iter().enumerate() {
            data[4 + 2 * i] = *a as u32;
            data[5 + 2 * i] = (*a >> 32) as u32;
        }
        let mut acc = 0u32;
        let mut pc = 0;
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => acc = data[(i.k / 4) as usize],
                AND_K => acc &= i.k,
                JA => pc += i.k as usize,
                JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                JGT_K => pc += if acc > i.k { i.jt } else { i.jf } as usize,
                JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                RET_K => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn default_and_errno() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["getcwd", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}
            ]
        })))
        .unwrap();
        let a = NATIVE_ARCH;
        assert_eq!(run(&p, a, libc::SYS_getcwd as u32, [0; 6]), RET_ERRNO | 38);
        assert_eq!(
            run(&p, a, libc::SYS_mkdir as u32, [0; 6]),
            RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(run(&p, a, libc::SYS_getpid as u32, [0; 6]), RET_ALLOW);
        assert_eq!(
            run(&p, 0x4000_0003, libc::SYS_getpid as u32, [0; 6]),
            RET_KILL_PROCESS,
            "foreign arch"
        );
    }

    #[test]
    fn argument_conditions() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["dup3"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_LT"},
                          {"index": 2, "value": 4294967296u64, "op": "SCMP_CMP_GE"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["kill"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_NE"}]},
                {"names": ["tee"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_GT"}, {"index": 0, "value": 7, "op": "SCMP_CMP_LE"}]}
            ]
        })))
        .unwrap();
        let a = NATIVE_ARCH;
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let nr = |n: i64| n as u32;
        assert_eq!(
            run(&p, a, nr(libc::SYS_personality), [8, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(
                &p,
                a,
                nr(libc::SYS_personality),
                [8 | (1 << 32), 0, 0, 0, 0, 0]
            ),
            eperm,
            "high word counts"
        );
        assert_eq!(
            run(&p, a, nr(libc::SYS_dup3), [0, 9, 1 << 32, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&p, a, nr(libc::SYS_dup3), [0, 10, 1 << 32, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            run(&p, a, nr(libc::SYS_dup3), [0, 9, (1 << 32) - 1, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            run(&p, a, nr(libc::SYS_clone), [0x11, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&p, a, nr(libc::SYS_clone), [0x1000_0000, 0, 0, 0, 0, 0]),
            eperm,
            "CLONE_NEWUSER bit"
        );
        assert_eq!(
            run(&p, a, nr(libc::SYS_kill), [1, 15, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(run(&p, a, nr(libc::SYS_kill), [1, 9, 0, 0, 0, 0]), eperm);
        for (v, want) in [(5, eperm), (6, RET_ALLOW), (7, RET_ALLOW), (8, eperm)] {
            assert_eq!(
                run(&p, a, nr(libc::SYS_tee), [v, 0, 0, 0, 0, 0]),
                want,
                "tee {v}"
            );
        }
    }

    #[test]
    fn notify_needs_a_listener() {
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}));
        let prog = compile(&p).unwrap();
        assert_eq!(
            run(&prog, NATIVE_ARCH, libc::SYS_mkdir as u32, [0; 6]),
            RET_USER_NOTIF
        );
        let e = listener(&p).unwrap_err().to_string();
        assert!(e.contains("listenerPath"), "{e}");
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY",
            "listenerPath": "/run/agent.sock"}));
        assert_eq!(
            listener(&p).unwrap().unwrap(),
            std::path::Path::new("/run/agent.sock")
        );
    }
}
