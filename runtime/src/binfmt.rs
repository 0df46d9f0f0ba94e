//! The kernel's binfmt_misc handlers: which emulators run another architecture's binaries
//! (`kiln system binfmt`, `kiln info`), and registering those installed (Debian's
//! `qemu-user-static` puts one line per architecture in `/usr/lib/binfmt.d`), as
//! tonistiigi/binfmt does for docker.
//!
//! A handler registered with the `F` (fix-binary) flag has its interpreter opened by the kernel
//! at registration, so it runs inside any mount namespace, a container's included, without
//! being in its image: that is what builds and containers for another platform need.

use std::path::{Path, PathBuf};

/// Why handlers could not be read or registered.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("binfmt_misc is not mounted at {0} and could not be: {1}")]
    Mount(String, String),
    #[error("{file}: line {line}: {reason}")]
    BadLine {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Where the kernel's binfmt_misc filesystem is.
pub const DIR: &str = "/proc/sys/fs/binfmt_misc";

/// Where distributions put handler definitions (`$KILN_BINFMT_D` overrides, for tests).
pub fn conf_dir() -> PathBuf {
    std::env::var_os("KILN_BINFMT_D")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/usr/lib/binfmt.d"), PathBuf::from)
}

/// One registered handler.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    /// The platform its binaries are for, when the name says (`qemu-aarch64`: `linux/arm64`).
    pub platform: Option<String>,
}

impl Handler {
    /// Whether the kernel opened the interpreter at registration (`F`): it works in a
    /// container whose root does not have it.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }
}

/// The platform of a QEMU handler's name (as qemu-user-static names them).
pub fn platform_of(name: &str) -> Option<&'static str> {
    Some(match name.strip_prefix("qemu-")? {
        "aarch64" => "linux/arm64",
        "arm" => "linux/arm/v7",
        "x86_64" => "linux/amd64",
        "i386" => "linux/386",
        "riscv64" => "linux/riscv64",
        "ppc64le" => "linux/ppc64le",
        "s390x" => "linux/s390x",
        "mips64el" => "linux/mips64le",
        "loongarch64" => "linux/loong64",
        _ => return None,
    })
}

/// Mounts binfmt_misc where it is missing (as root; a container host often has it unmounted).
pub fn ensure_mounted() -> Result<(), BinfmtError> {
    if Path::new(DIR).join("register").exists() {
        return Ok(());
    }
    // A filesystem with no source and no data: nothing of the caller's reaches the mount.
    rustix::mount::mount(
        "binfmt_misc",
        DIR,
        "binfmt_misc",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| BinfmtError::Mount(DIR.into(), e.to_string()))
}

/// The handlers registered now (none when binfmt_misc is not mounted).
pub fn list() -> Result<Vec<Handler>, BinfmtError> {
    let dir = Path::new(DIR);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push(Handler {
            platform: platform_of(&name).map(str::to_string),
            enabled: text.lines().next() == Some("enabled"),
            interpreter: field("interpreter "),
            flags: field("flags:"),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A handler definition of a `binfmt.d` file: `:name:type:offset:magic:mask:interpreter:flags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub interpreter: String,
    pub flags: String,
    /// The line as the kernel's `register` file takes it.
    pub line: String,
}

/// The definitions of the QEMU emulators in `dir`'s `*.conf` files (comments and other
/// handlers left out).
pub fn installed(dir: &Path) -> Result<Vec<Definition>, BinfmtError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| BinfmtError::Io {
            path: file.clone(),
            source,
        })?;
        for (k, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let bad = |reason: &str| BinfmtError::BadLine {
                file: file.clone(),
                line: k + 1,
                reason: reason.into(),
            };
            // The first character is the separator the line chose (`:` almost always).
            let sep = line.chars().next().ok_or_else(|| bad("empty"))?;
            let fields: Vec<&str> = line[sep.len_utf8()..].split(sep).collect();
            if fields.len() < 7 {
                return Err(bad(
                    "expected :name:type:offset:magic:mask:interpreter:flags",
                ));
            }
            let name = fields[0].to_string();
            if platform_of(&name).is_none() {
                continue;
            }
            if name.contains('/') || name == "register" || name == "status" {
                return Err(bad("not a handler name"));
            }
            out.push(Definition {
                name,
                interpreter: fields[5].to_string(),
                flags: fields[6].to_string(),
                line: line.to_string(),
            });
        }
    }
    Ok(out)
}

/// Registers each of `defs` that is not registered yet, with the fix-binary flag added (a
/// handler without it cannot run in a container); the names registered.
pub fn register(defs: &[Definition]) -> Result<Vec<String>, BinfmtError> {
    ensure_mounted()?;
    let mut done = Vec::new();
    for d in defs {
        if Path::new(DIR).join(&d.name).exists() {
            continue;
        }
        if !Path::new(&d.interpreter).is_file() {
            continue;
        }
        let mut line = d.line.clone();
        if !d.flags.contains('F') {
            line.push('F');
        }
        let path = Path::new(DIR).join("register");
        std::fs::write(&path, line.as_bytes())
            .map_err(|source| BinfmtError::Io { path, source })?;
        done.push(d.name.clone());
    }
    Ok(done)
}

/// The ELF machine (`e_machine`) of a program's first bytes; `None` when they are not an ELF
/// header (a script, a short file).
pub fn elf_machine(header: &[u8]) -> Option<u16> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let bytes = [header[18], header[19]];
    Some(match header[5] {
        2 => u16::from_be_bytes(bytes),
        _ => u16::from_le_bytes(bytes),
    })
}

/// The ELF machines an architecture's programs have (OCI's names).
pub fn machines_of(architecture: &str) -> &'static [u16] {
    match architecture {
        "amd64" => &[62],
        "386" => &[3],
        "arm64" => &[183],
        "arm" => &[40],
        "riscv64" => &[243],
        "ppc64le" | "ppc64" => &[21],
        "s390x" => &[22],
        "mips64le" | "mips64" | "mipsle" | "mips" => &[8],
        "loong64" => &[258],
        _ => &[],
    }
}

/// The OCI architecture an ELF machine is, for messages.
pub fn architecture_of(machine: u16) -> Option<&'static str> {
    Some(match machine {
        62 => "amd64",
        3 => "386",
        183 => "arm64",
        40 => "arm",
        243 => "riscv64",
        21 => "ppc64le",
        22 => "s390x",
        8 => "mips64le",
        258 => "loong64",
        _ => return None,
    })
}

/// What running programs for a platform takes, given the handlers registered, the emulators
/// installed and whether kiln may register one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Emulation {
    /// The machine runs them as they are (this platform, or `386` on `amd64`).
    Native,
    /// A registered handler that works in the sandbox.
    Ready,
    /// Register these first.
    Register(Vec<Definition>),
    /// Cannot: why, and what to do.
    Refused(String),
}

/// Whether an emulator for `platform` is `name` (a QEMU handler's name).
fn serves(name: &str, platform: &crate::oci::Platform) -> bool {
    platform_of(name)
        .and_then(|p| crate::oci::Platform::parse(p).ok())
        .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
}

fn emulation(
    platform: &crate::oci::Platform,
    registered: &[Handler],
    installed: &[Definition],
    root: bool,
) -> Emulation {
    let host = crate::oci::host_platform().normalized();
    if platform.is_host()
        || (host.architecture == "amd64"
            && platform.architecture == "386"
            && platform.os == host.os)
    {
        return Emulation::Native;
    }
    match registered.iter().find(|h| serves(&h.name, platform)) {
        Some(h) if !h.enabled => Emulation::Refused(format!(
            "the binfmt_misc handler {} for {platform} is disabled: enable it with `echo 1 > \
             {DIR}/{}`",
            h.name, h.name
        )),
        Some(h) if !h.fix_binary() => Emulation::Refused(format!(
            "the binfmt_misc handler {} for {platform} has no fix-binary flag (F), so its \
             emulator {} would have to be inside the image: re-register it with `kiln system \
             binfmt --uninstall {} && kiln system binfmt --install`",
            h.name, h.interpreter, h.name
        )),
        Some(_) => Emulation::Ready,
        None => {
            let defs: Vec<Definition> = installed
                .iter()
                .filter(|d| serves(&d.name, platform))
                .cloned()
                .collect();
            if defs.is_empty() {
                Emulation::Refused(format!(
                    "running programs for {platform} needs an emulator: install QEMU's \
                     user-mode emulators (Debian and Ubuntu: apt-get install \
                     qemu-user-static); kiln registers them"
                ))
            } else if !root {
                Emulation::Refused(format!(
                    "running programs for {platform} needs its emulator registered with the \
                     kernel: run `kiln system binfmt --install` as root once"
                ))
            } else {
                Emulation::Register(defs)
            }
        }
    }
}

/// Makes sure programs for `platform` can run: natively, or through a QEMU handler for its
/// architecture that is registered, enabled and has the fix-binary flag; when none is
/// registered and the emulator is installed, registers it (as root: binfmt_misc is the
/// machine's). The error says what to install or do.
pub fn ensure_emulator(platform: &crate::oci::Platform) -> Result<(), String> {
    // Platforms built side by side may both find the handler missing: one registers it.
    static REGISTERING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = REGISTERING.lock().unwrap_or_else(|p| p.into_inner());
    let registered = list().map_err(|e| e.to_string())?;
    let installed: Vec<Definition> = installed(&conf_dir())
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|d| Path::new(&d.interpreter).is_file())
        .collect();
    let root = rustix::process::geteuid().is_root();
    match emulation(platform, &registered, &installed, root) {
        Emulation::Native | Emulation::Ready => Ok(()),
        Emulation::Refused(why) => Err(why),
        Emulation::Register(defs) => {
            register(&defs).map_err(|e| format!("registering the emulator for {platform}: {e}"))?;
            let now = list().map_err(|e| e.to_string())?;
            match emulation(platform, &now, &[], root) {
                Emulation::Ready => Ok(()),
                Emulation::Refused(why) => Err(why),
                _ => Err(format!(
                    "the emulator for {platform} did not register with binfmt_misc"
                )),
            }
        }
    }
}

/// Removes handler `name`; whether it was registered.
pub fn unregister(name: &str) -> Result<bool, BinfmtError> {
    if name.contains('/') || name == "register" || name == "status" || name.is_empty() {
        return Ok(false);
    }
    let path = Path::new(DIR).join(name);
    if !path.exists() {
        return Ok(false);
    }
    std::fs::write(&path, b"-1").map_err(|source| BinfmtError::Io { path, source })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_needs_a_working_handler_or_an_installed_emulator() {
        let arm64 = crate::oci::Platform::parse("linux/arm64").unwrap();
        let handler = |flags: &str, enabled: bool| Handler {
            name: "qemu-aarch64".into(),
            enabled,
            interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into(),
            flags: flags.into(),
            platform: Some("linux/arm64".into()),
        };
        let def = Definition {
            name: "qemu-aarch64".into(),
            interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into(),
            flags: "OCF".into(),
            line: ":qemu-aarch64:M::x:y:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OCF".into(),
        };
        let host = crate::oci::host_platform().normalized();
        assert_eq!(emulation(&host, &[], &[], false), Emulation::Native);
        if host.architecture == "arm64" {
            return;
        }
        assert_eq!(
            emulation(&arm64, &[handler("POF", true)], &[], false),
            Emulation::Ready
        );
        let why = |e: Emulation| match e {
            Emulation::Refused(w) => w,
            other => panic!("{other:?}"),
        };
        assert!(why(emulation(&arm64, &[handler("OF", false)], &[], true)).contains("disabled"));
        assert!(
            why(emulation(&arm64, &[handler("P", true)], &[], true)).contains("fix-binary flag")
        );
        let none = why(emulation(&arm64, &[], &[], true));
        assert!(
            none.contains("linux/arm64") && none.contains("qemu-user-static"),
            "{none}"
        );
        assert!(
            why(emulation(&arm64, &[], std::slice::from_ref(&def), false))
                .contains("kiln system binfmt --install")
        );
        assert_eq!(
            emulation(&arm64, &[], std::slice::from_ref(&def), true),
            Emulation::Register(vec![def.clone()])
        );
        // An emulator for another architecture is none for this one.
        let riscv = crate::oci::Platform::parse("linux/riscv64").unwrap();
        assert!(
            why(emulation(&riscv, &[handler("POF", true)], &[def], true))
                .contains("needs an emulator")
        );
    }

    #[test]
    fn elf_machines_are_read_from_headers() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[5] = 1;
        h[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(elf_machine(&h), Some(183));
        assert_eq!(architecture_of(183), Some("arm64"));
        h[5] = 2;
        h[18..20].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(elf_machine(&h), Some(22));
        assert_eq!(elf_machine(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(elf_machine(&h[..10]), None);
        assert!(machines_of("amd64").contains(&62) && machines_of("plan9").is_empty());
        // This test's own program is this machine's.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let arch = crate::oci::host_platform().architecture;
        assert!(machines_of(&arch).contains(&elf_machine(&me[..20]).unwrap()));
    }

    #[test]
    fn debians_qemu_lines_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("qemu-aarch64.conf"),
            "# comment\n:qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01:\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:POCF\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("python3.11.conf"),
            ":python3.11:M::\\xa7\\x0d::/usr/bin/python3.11:\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        let defs = installed(dir.path()).unwrap();
        assert_eq!(defs.len(), 1, "{defs:?}");
        assert_eq!(defs[0].name, "qemu-aarch64");
        assert_eq!(
            defs[0].interpreter,
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
        );
        assert_eq!(defs[0].flags, "POCF");
        assert_eq!(platform_of("qemu-arm"), Some("linux/arm/v7"));
        assert_eq!(platform_of("python3.11"), None);
        std::fs::write(dir.path().join("bad.conf"), ":qemu-riscv64:M\n").unwrap();
        let e = installed(dir.path()).unwrap_err().to_string();
        assert!(e.contains("bad.conf: line 1"), "{e}");
    }
}
