//! Which device nodes a sandbox may use: Docker's allow-list, enforced by the
//! kernel through the cgroup the sandbox joins. `mknod` of any device is allowed (images and
//! RUN steps make device nodes, as with docker), but reading or writing one is refused unless
//! it is null, zero, full, random, urandom, tty, console, ptmx or a pty. Without this a RUN
//! step holding CAP_MKNOD could `mknod /tmp/k c 1 11` and write the host's kernel log, or open
//! the host's disks and `/dev/kvm`.
//!
//! Two forms of the same list: the lines cgroup v1's `devices.allow` takes, and a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program for cgroup v2 (which has no devices controller; runc
//! and youki generate the same kind of program).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use rustix::io::Errno;

/// Block or character device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Char,
    Block,
}

/// One allowed (kind, major, minor) with its access; `None` is any number.
#[derive(Debug, Clone, Copy)]
struct Rule {
    kind: Kind,
    major: Option<u32>,
    minor: Option<u32>,
    /// BPF_DEVCG_ACC_* bits: 1 mknod, 2 read, 4 write.
    access: u32,
}

const MKNOD: u32 = 1;
const RWM: u32 = 7;

/// Docker's default device rules (moby `oci/defaults.go` and runc's allowed devices).
const RULES: [Rule; 11] = [
    rule(Kind::Char, None, None, MKNOD),
    rule(Kind::Block, None, None, MKNOD),
    rule(Kind::Char, Some(1), Some(3), RWM), // null
    rule(Kind::Char, Some(1), Some(5), RWM), // zero
    rule(Kind::Char, Some(1), Some(7), RWM), // full
    rule(Kind::Char, Some(1), Some(8), RWM), // random
    rule(Kind::Char, Some(1), Some(9), RWM), // urandom
    rule(Kind::Char, Some(5), Some(0), RWM), // tty
    rule(Kind::Char, Some(5), Some(1), RWM), // console
    rule(Kind::Char, Some(5), Some(2), RWM), // ptmx
    rule(Kind::Char, Some(136), None, RWM),  // /dev/pts/N
];

const fn rule(kind: Kind, major: Option<u32>, minor: Option<u32>, access: u32) -> Rule {
    Rule {
        kind,
        major,
        minor,
        access,
    }
}

/// The lines written to a v1 cgroup's `devices.allow`, after `a` to `devices.deny`.
pub(crate) fn v1_allow_lines() -> Vec<String> {
    RULES
        .iter()
        .map(|r| {
            let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
            let mut access = String::new();
            for (bit, c) in [(2, 'r'), (4, 'w'), (MKNOD, 'm')] {
                if r.access & bit != 0 {
                    access.push(c);
                }
            }
            let kind = if r.kind == Kind::Char { 'c' } else { 'b' };
            format!("{kind} {}:{} {access}", num(r.major), num(r.minor))
        })
        .collect()
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JSET_K: u8 = 0x45;
const JMP_EXIT: u8 = 0x95;

/// The program: registers r2 = device type, r3 = access, r4 = major, r5 = minor (from
/// `struct bpf_cgroup_dev_ctx` in r1); each rule is a block that jumps to the next when a field
/// differs and returns 1 (allow) otherwise; falling off the last rule returns 0 (deny).
pub(crate) fn program() -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in &RULES {
        // BPF_DEVCG_DEV_BLOCK = 1, BPF_DEVCG_DEV_CHAR = 2.
        let kind = if r.kind == Kind::Char { 2 } else { 1 };
        let mut tests: Vec<(u8, u8, i32)> = vec![(JMP_JNE_K, 2, kind)];
        if r.access != RWM {
            // Any requested access outside the rule's skips it.
            tests.push((JMP_JSET_K, 3, i32::try_from(!r.access & RWM).unwrap_or(0)));
        }
        if let Some(m) = r.major {
            tests.push((JMP_JNE_K, 4, i32::try_from(m).unwrap_or(-1)));
        }
        if let Some(m) = r.minor {
            tests.push((JMP_JNE_K, 5, i32::try_from(m).unwrap_or(-1)));
        }
        let n = tests.len();
        for (i, (code, reg, imm)) in tests.into_iter().enumerate() {
            // Past the remaining tests and the two allowing instructions.
            let skip = i16::try_from(n - 1 - i + 2).unwrap_or(i16::MAX);
            p.push(insn(code, reg, 0, skip, imm));
        }
        p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// `union bpf_attr` as BPF_PROG_LOAD reads it (the fields up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` as BPF_PROG_ATTACH reads it.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf<T>(cmd: libc::c_long, attr: &T) -> Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a `#[repr(C)]` prefix of `union bpf_attr` for `cmd`, valid for reads of
    // its size during the call; the kernel zero-extends the rest and writes nothing back for
    // these commands. Pointers inside it (instructions, license) outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(r)
    }
}

/// The loaded program, once per process (every sandbox attaches the same one).
fn loaded() -> Result<&'static OwnedFd, Errno> {
    static PROG: std::sync::OnceLock<Result<OwnedFd, Errno>> = std::sync::OnceLock::new();
    PROG.get_or_init(|| {
        let insns = program();
        let license = c"Apache-2.0";
        let mut name = [0u8; 16];
        name[..12].copy_from_slice(b"kiln_devices");
        let attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: u32::try_from(insns.len()).unwrap_or(0),
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..ProgLoad::default()
        };
        let fd = bpf(BPF_PROG_LOAD, &attr)?;
        let fd = i32::try_from(fd).map_err(|_| Errno::INVAL)?;
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .as_ref()
    .map_err(|e| *e)
}

/// Attaches the allow-list program to the v2 cgroup open as `dir`. `ALLOW_MULTI`: programs of
/// the cgroups above still run too, so kiln can only narrow what its own cgroup allows.
pub(crate) fn attach_bpf(dir: impl AsFd) -> Result<(), Errno> {
    let prog = loaded()?;
    let attr = ProgAttach {
        target_fd: u32::try_from(dir.as_fd().as_raw_fd()).map_err(|_| Errno::BADF)?,
        attach_bpf_fd: u32::try_from(prog.as_raw_fd()).map_err(|_| Errno::BADF)?,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttach::default()
    };
    bpf(BPF_PROG_ATTACH, &attr).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines_are_dockers() {
        let lines = v1_allow_lines();
        assert_eq!(lines[0], "c *:* m");
        assert_eq!(lines[1], "b *:* m");
        assert!(lines.contains(&"c 1:3 rwm".to_string()));
        assert!(lines.contains(&"c 136:* rwm".to_string()));
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("1:11") || l.starts_with("b 7"))
        );
    }

    /// Runs the program over one request as the kernel would (a tiny interpreter of the few
    /// opcodes it uses), so the rules are checked without loading anything.
    fn allows(kind: u32, access: u32, major: u32, minor: u32) -> bool {
        let p = program();
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            pc += 1;
            let jump = |cond: bool, pc: &mut usize| {
                if cond {
                    *pc = pc.wrapping_add_signed(isize::from(i.off));
                }
            };
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1);
                    r[dst] = u64::from(ctx[usize::try_from(i.off).unwrap() / 4]);
                }
                ALU32_AND_K => r[dst] = u64::from((r[dst] as u32) & i.imm as u32),
                ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                ALU64_MOV_K => r[dst] = i.imm as u64,
                JMP_JNE_K => jump(r[dst] != i.imm as u64, &mut pc),
                JMP_JSET_K => jump(r[dst] & i.imm as u64 != 0, &mut pc),
                JMP_EXIT => return r[0] == 1,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn the_program_allows_the_list_and_refuses_the_rest() {
        let (blk, chr) = (1, 2);
        let (m, r, w) = (1, 2, 4);
        assert!(allows(chr, r | w, 1, 3)); // null
        assert!(allows(chr, r, 1, 9)); // urandom
        assert!(allows(chr, r | w, 136, 42)); // a pty
        assert!(allows(chr, m, 1, 11)); // mknod of anything
        assert!(allows(blk, m, 7, 0));
        assert!(!allows(chr, w, 1, 11)); // /dev/kmsg
        assert!(!allows(chr, r | w, 10, 232)); // /dev/kvm
        assert!(!allows(blk, r, 7, 0)); // /dev/loop0
        assert!(!allows(chr, r, 10, 183)); // /dev/hwrng
        assert!(!allows(blk, r | m, 1, 3)); // a block device with null's numbers
    }
}
