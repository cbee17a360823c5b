//! skiff-exec: the last step into a container. The runtime's child has set everything up
//! and execs this (from a sealed memfd) instead of the container's program, so at that
//! execve `/proc/self/exe` is this sealed copy, never the runtime's binary on disk
//! (CVE-2019-5736: an image whose program is `#!/proc/self/exe` would otherwise run the
//! runtime binary inside the container, where it can be reopened for writing).
//!
//!   skiff-exec REPORT-FD PATH ARGV0 ARGS...
//!
//! execve(PATH, [ARGV0, ARGS...], environ). REPORT-FD (or -1) is the runtime's sync
//! channel: it is closed by the execve, and told `{"type":"exec_failed","errno":N}` if the
//! execve fails; without one the failure goes to stderr. Built by build.rs with rustc
//! alone: no_std, no libc, static, about a kilobyte.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

global_asm!(
    ".globl _start",
    "_start:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call stub_main",
    "ud2",
);

const SYS_WRITE: usize = 1;
const SYS_FCNTL: usize = 72;
const SYS_EXECVE: usize = 59;
const SYS_EXIT: usize = 60;

unsafe fn syscall3(n: usize, a: usize, b: usize, c: usize) -> isize {
    let r: isize;
    asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a, in("rsi") b, in("rdx") c,
         lateout("rcx") _, lateout("r11") _, options(nostack));
    r
}

unsafe fn write_all(fd: usize, mut p: *const u8, mut n: usize) {
    while n > 0 {
        let w = syscall3(SYS_WRITE, fd, p as usize, n);
        if w <= 0 {
            return;
        }
        p = p.add(w as usize);
        n -= w as usize;
    }
}

unsafe fn write_str(fd: usize, s: &str) {
    write_all(fd, s.as_ptr(), s.len());
}

unsafe fn cstr_len(p: *const u8) -> usize {
    let mut n = 0;
    // Volatile: a plain loop becomes a call to strlen, and there is no libc here.
    while core::ptr::read_volatile(p.add(n)) != 0 {
        n += 1;
    }
    n
}

/// A small decimal number into `buf` (from its end); returns where it starts.
unsafe fn decimal(mut v: usize, buf: *mut u8, len: usize) -> usize {
    let mut i = len;
    loop {
        i -= 1;
        *buf.add(i) = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            return i;
        }
    }
}

/// "-1" or a decimal fd.
unsafe fn parse_fd(p: *const u8) -> isize {
    if *p == b'-' {
        return -1;
    }
    let mut v: isize = 0;
    let mut i = 0;
    while *p.add(i) != 0 {
        v = v * 10 + (*p.add(i) - b'0') as isize;
        i += 1;
    }
    v
}

#[no_mangle]
unsafe extern "C" fn stub_main(sp: *const usize) -> ! {
    let argc = *sp;
    let argv = sp.add(1) as *const *const u8;
    let envp = argv.add(argc + 1);
    if argc < 4 {
        write_str(2, "skiff-exec: usage: skiff-exec REPORT-FD PATH ARGV0 [ARGS...]\n");
        syscall3(SYS_EXIT, 2, 0, 0);
    }
    let report = parse_fd(*argv.add(1));
    if report >= 0 {
        syscall3(SYS_FCNTL, report as usize, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
    }
    let path = *argv.add(2);
    let r = syscall3(SYS_EXECVE, path as usize, argv.add(3) as usize, envp as usize);
    let errno = (-r) as usize;
    let mut num = core::mem::MaybeUninit::<[u8; 20]>::uninit();
    let buf = num.as_mut_ptr() as *mut u8;
    let start = decimal(errno, buf, 20);
    if report >= 0 {
        write_str(report as usize, "{\"type\":\"exec_failed\",\"errno\":");
        write_all(report as usize, buf.add(start), 20 - start);
        write_str(report as usize, "}\n");
    } else {
        write_str(2, "skiff-runtime: exec ");
        write_all(2, path, cstr_len(path));
        write_str(2, ": errno ");
        write_all(2, buf.add(start), 20 - start);
        write_str(2, "\n");
    }
    syscall3(SYS_EXIT, 1, 0, 0);
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    unsafe { syscall3(SYS_EXIT, 126, 0, 0) };
    loop {}
}
