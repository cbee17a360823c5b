//! cgroup v2 device access control: v2 has no devices.allow file, so the rule list is
//! compiled into a BPF_PROG_TYPE_CGROUP_DEVICE program and attached to the cgroup.
//!
//! Rules are checked last-to-first and the first match decides, which gives the v1
//! semantics of replaying the list in order; no match denies.

use crate::error::{Context, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One eBPF instruction (struct bpf_insn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8, // dst in the low nibble, src in the high nibble
    pub off: i16,
    pub imm: i32,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// BPF_DEVCG_DEV_* and BPF_DEVCG_ACC_* values.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
fn access_bits(a: &str) -> i32 {
    a.chars().fold(0, |acc, c| {
        acc | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

/// Compile rules into a program. Registers: r2 device type, r3 requested access,
/// r4 major, r5 minor (from struct bpf_cgroup_dev_ctx in r1).
pub fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut p = vec![
        ins(LDX_W, 2, 1, 0, 0),
        ins(AND_K, 2, 0, 0, 0xffff),
        ins(LDX_W, 3, 1, 0, 0),
        ins(RSH_K, 3, 0, 0, 16),
        ins(LDX_W, 4, 1, 4, 0),
        ins(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Jumps to the next block get their offset patched once the block length is known.
        let mut jumps = Vec::new();
        match r.typ() {
            Some(LinuxDeviceType::B) => {
                jumps.push(block.len());
                block.push(ins(JNE_K, 2, 0, 0, DEV_BLOCK));
            }
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => {
                jumps.push(block.len());
                block.push(ins(JNE_K, 2, 0, 0, DEV_CHAR));
            }
            _ => {}
        }
        let acc = access_bits(
            r.access()
                .as_deref()
                .filter(|a| !a.is_empty())
                .unwrap_or("rwm"),
        );
        if acc != 7 {
            // Match only when every requested bit is in the rule: (req & acc) == req.
            block.push(ins(MOV_X, 1, 3, 0, 0));
            block.push(ins(AND_K, 1, 0, 0, acc));
            jumps.push(block.len());
            block.push(ins(JNE_X, 1, 3, 0, 0));
        }
        if let Some(m) = r.major().filter(|m| *m >= 0) {
            jumps.push(block.len());
            block.push(ins(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0) {
            jumps.push(block.len());
            block.push(ins(JNE_K, 5, 0, 0, m as i32));
        }
        block.push(ins(MOV_K, 0, 0, 0, i32::from(r.allow())));
        block.push(ins(EXIT, 0, 0, 0, 0));
        let len = block.len();
        let unconditional = jumps.is_empty();
        for j in jumps {
            block[j].off = (len - j - 1) as i16;
        }
        p.extend(block);
        // Nothing after a rule that matches everything can run, and the verifier
        // rejects unreachable instructions.
        if unconditional {
            return p;
        }
    }
    p.push(ins(MOV_K, 0, 0, 0, 0));
    p.push(ins(EXIT, 0, 0, 0, 0));
    p
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> nix::Result<i64> {
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    nix::errno::Errno::result(r)
}

fn put32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const ATTACH_CGROUP_DEVICE: u32 = 6;
const F_ALLOW_MULTI: u32 = 2;

/// Load the program for `rules` and make it the only device program on `cgroup_dir`.
pub fn attach(cgroup_dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let prog = compile(rules);
    let mut raw: Vec<u8> = Vec::with_capacity(prog.len() * 8);
    for i in &prog {
        raw.push(i.code);
        raw.push(i.regs);
        raw.extend_from_slice(&i.off.to_ne_bytes());
        raw.extend_from_slice(&i.imm.to_ne_bytes());
    }
    let license = b"Apache\0";
    let mut log = vec![0u8; 4096];
    let mut a = [0u8; 128];
    put32(&mut a, 0, PROG_TYPE_CGROUP_DEVICE);
    put32(&mut a, 4, prog.len() as u32);
    put64(&mut a, 8, raw.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 24, 1);
    put32(&mut a, 28, log.len() as u32);
    put64(&mut a, 32, log.as_mut_ptr() as u64);
    let fd = bpf(BPF_PROG_LOAD, &mut a).step(|| {
        let msg = String::from_utf8_lossy(&log);
        format!(
            "load device filter for {}: {}",
            cgroup_dir.display(),
            msg.trim_end_matches('\0').trim()
        )
    })?;
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cg = std::fs::File::open(cgroup_dir).step(|| format!("open {}", cgroup_dir.display()))?;

    // Programs already attached (an update): replaced after the new one is in place.
    let mut ids = [0u32; 64];
    let mut q = [0u8; 128];
    put32(&mut q, 0, cg.as_raw_fd() as u32);
    put32(&mut q, 4, ATTACH_CGROUP_DEVICE);
    put64(&mut q, 16, ids.as_mut_ptr() as u64);
    put32(&mut q, 24, ids.len() as u32);
    let old: Vec<u32> = match bpf(BPF_PROG_QUERY, &mut q) {
        Ok(_) => {
            let n = u32::from_ne_bytes(q[24..28].try_into().unwrap()) as usize;
            ids[..n.min(ids.len())].to_vec()
        }
        Err(_) => Vec::new(),
    };

    let mut at = [0u8; 128];
    put32(&mut at, 0, cg.as_raw_fd() as u32);
    put32(&mut at, 4, prog_fd.as_raw_fd() as u32);
    put32(&mut at, 8, ATTACH_CGROUP_DEVICE);
    put32(&mut at, 12, F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut at)
        .step(|| format!("attach device filter to {}", cgroup_dir.display()))?;

    for id in old {
        let mut g = [0u8; 128];
        put32(&mut g, 0, id);
        let Ok(ofd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut g) else {
            continue;
        };
        let ofd = unsafe { OwnedFd::from_raw_fd(ofd as i32) };
        let mut d = [0u8; 128];
        put32(&mut d, 0, cg.as_raw_fd() as u32);
        put32(&mut d, 4, ofd.as_raw_fd() as u32);
        put32(&mut d, 8, ATTACH_CGROUP_DEVICE);
        let _ = bpf(BPF_PROG_DETACH, &mut d);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::convert::device_rules;

    /// A tiny interpreter for the instructions `compile` emits.
    fn run(p: &[Insn], dev_type: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [dev_type | (access << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                AND_K => r[dst] &= i.imm as u64,
                RSH_K => r[dst] >>= i.imm,
                MOV_K => r[dst] = i.imm as u64,
                MOV_X => r[dst] = r[src],
                JNE_K if r[dst] != i.imm as u64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    fn rule(
        allow: bool,
        t: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        acc: &str,
    ) -> LinuxDeviceCgroup {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(allow);
        d.set_typ(Some(t));
        d.set_major(major);
        d.set_minor(minor);
        d.set_access(Some(acc.into()));
        d
    }

    #[test]
    fn deny_all_then_defaults() {
        let cfg = vec![rule(false, LinuxDeviceType::A, None, None, "rwm")];
        let p = compile(&device_rules(Some(&cfg)));
        const R: u32 = 2;
        const W: u32 = 4;
        const M: u32 = 1;
        assert_eq!(run(&p, 2, R | W, 1, 3), 1, "/dev/null rw");
        assert_eq!(run(&p, 2, R, 136, 4), 1, "pty slave");
        assert_eq!(run(&p, 2, R, 1, 1), 0, "/dev/mem denied");
        assert_eq!(run(&p, 1, R, 8, 0), 0, "block sda read denied");
        assert_eq!(run(&p, 1, M, 8, 0), 1, "mknod of block devices allowed");
        assert_eq!(
            run(&p, 1, M | R, 8, 0),
            0,
            "mknod+read is not a subset of m"
        );
    }

    #[test]
    fn no_unreachable_code_after_a_catch_all() {
        let cfg = vec![rule(false, LinuxDeviceType::A, None, None, "rwm")];
        let p = compile(&cfg);
        // The catch-all is the whole program after the loads: mov r0, 0; exit.
        assert_eq!(p.len(), 6 + 2);
        assert_eq!(p[p.len() - 1].code, EXIT);
    }

    #[test]
    fn later_rules_win() {
        let rules = vec![
            rule(true, LinuxDeviceType::C, Some(10), None, "rw"),
            rule(false, LinuxDeviceType::C, Some(10), Some(200), "w"),
        ];
        let p = compile(&rules);
        assert_eq!(run(&p, 2, 2, 10, 200), 1, "read of 10:200 still allowed");
        assert_eq!(
            run(&p, 2, 4, 10, 200),
            0,
            "write of 10:200 denied by the later rule"
        );
        assert_eq!(run(&p, 2, 4, 10, 1), 1);
        assert_eq!(run(&p, 1, 2, 10, 1), 0, "block 10:1 matches no rule");
    }
}
