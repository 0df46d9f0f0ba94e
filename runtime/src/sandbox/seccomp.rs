//! The sandbox's seccomp filter: the system calls Docker's default profile refuses to a
//! container without extra capabilities (moby `profiles/seccomp/default.json`)
//! fail with EPERM. Most are already useless without the capabilities kiln drops; the filter
//! closes what capabilities do not: new user namespaces (`unshare`/`clone` with namespace
//! flags, from which a process would regain CAP_SYS_ADMIN over new mounts), `bpf`,
//! `perf_event_open`, `userfaultfd`, `io_uring`, keyrings, the new mount API.
//!
//! A deny list rather than Docker's allow list: kiln's list of what to refuse is short and
//! reviewable here, and a new kernel's new system calls keep working in builds. `clone3` gets
//! ENOSYS (its flags live in memory a filter cannot read), so C libraries fall back to `clone`,
//! whose flags are checked. A foreign architecture's system call (x32 on x86-64, or a 32-bit
//! ABI) kills the process: its numbers mean other calls.
//!
//! Built before the fork (plain data), installed in the child by [`install`] while it still has
//! CAP_SYS_ADMIN, so `no_new_privs` stays off and setuid programs work in RUN (as BuildKit).

/// One BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// `struct seccomp_data` offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low 32 bits of `args[0]` (little-endian; the namespace flags all live there).
const OFF_ARG0_LO: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME.
const CLONE_NS_FLAGS: u32 = 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000
    | 0x0000_0080;

/// Refused with EPERM.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn denied() -> Vec<i64> {
    use libc::*;
    let mut v = vec![
        SYS_acct,
        SYS_add_key,
        SYS_bpf,
        SYS_clock_adjtime,
        SYS_clock_settime,
        SYS_delete_module,
        SYS_finit_module,
        SYS_init_module,
        SYS_kcmp,
        SYS_kexec_file_load,
        SYS_kexec_load,
        SYS_keyctl,
        SYS_lookup_dcookie,
        SYS_mount,
        SYS_move_pages,
        SYS_open_by_handle_at,
        SYS_perf_event_open,
        SYS_pivot_root,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_quotactl,
        SYS_reboot,
        SYS_request_key,
        SYS_setns,
        SYS_settimeofday,
        SYS_swapon,
        SYS_swapoff,
        SYS_umount2,
        SYS_unshare,
        SYS_userfaultfd,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_move_mount,
        SYS_open_tree,
        SYS_mount_setattr,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        174, // create_module (gone from libc, not from the table)
        177, // get_kernel_syms
        SYS_iopl,
        SYS_ioperm,
        SYS_nfsservctl,
        SYS_sysfs,
        SYS__sysctl,
        SYS_uselib,
        SYS_ustat,
    ]);
    v
}

/// The filter program.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn program() -> Vec<Insn> {
    let i = |code, jt, jf, k| Insn { code, jt, jf, k };
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let nr = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    let mut p = vec![
        i(LD_W_ABS, 0, 0, OFF_ARCH),
        i(JEQ_K, 1, 0, AUDIT_ARCH),
        i(RET_K, 0, 0, RET_KILL_PROCESS),
        i(LD_W_ABS, 0, 0, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 system calls share the architecture value and set bit 30.
        p.push(i(JGE_K, 0, 1, 0x4000_0000));
        p.push(i(RET_K, 0, 0, RET_KILL_PROCESS));
    }
    for n in denied() {
        p.push(i(JEQ_K, 0, 1, nr(n)));
        p.push(i(RET_K, 0, 0, eperm));
    }
    p.push(i(JEQ_K, 0, 1, nr(libc::SYS_clone3)));
    p.push(i(RET_K, 0, 0, enosys));
    // clone: allowed unless its flags ask for a namespace.
    p.push(i(JEQ_K, 0, 3, nr(libc::SYS_clone)));
    p.push(i(LD_W_ABS, 0, 0, OFF_ARG0_LO));
    p.push(i(JSET_K, 0, 1, CLONE_NS_FLAGS));
    p.push(i(RET_K, 0, 0, eperm));
    p.push(i(RET_K, 0, 0, RET_ALLOW));
    p
}

/// No filter where kiln does not know the system call numbers.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn program() -> Vec<Insn> {
    Vec::new()
}

/// Installs `prog` on the calling thread. Async-signal-safe (one system call), for the child
/// between fork and exec; needs CAP_SYS_ADMIN (still held at that point).
pub(crate) fn install(prog: &[Insn]) -> Result<(), rustix::io::Errno> {
    if prog.is_empty() {
        return Ok(());
    }
    #[repr(C)]
    struct Fprog {
        len: u16,
        filter: *const Insn,
    }
    let fprog = Fprog {
        len: u16::try_from(prog.len()).unwrap_or(u16::MAX),
        filter: prog.as_ptr(),
    };
    // SAFETY: seccomp(2) reads `fprog` and the `len` instructions it points to, all alive for
    // the call; SECCOMP_SET_MODE_FILTER with no flags touches nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &fprog as *const Fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(rustix::io::Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_stay_inside_the_program() {
        let p = program();
        assert!(p.len() < 200, "{}", p.len());
        for (n, insn) in p.iter().enumerate() {
            if insn.code & 0x07 == 0x05 {
                let far = n + 1 + usize::from(insn.jt.max(insn.jf));
                assert!(far < p.len(), "instruction {n} jumps past the end");
            }
        }
        assert_eq!(p.last().map(|i| (i.code, i.k)), Some((RET_K, RET_ALLOW)));
    }
}
