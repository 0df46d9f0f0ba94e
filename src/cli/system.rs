//! `kiln version` and `kiln info`: what a bug report needs, in docker's shape.

use std::{path::Path, process::ExitCode};

use crate::render::format::{self, Format};

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// A Go template (`{{.Client.Version}}`) or `json`
    #[arg(short, long)]
    pub format: Option<String>,
}

/// The facts of this binary, as docker's `version` names them (`Client`).
fn version_object() -> serde_json::Value {
    let platform = kiln_runtime::oci::host_platform();
    serde_json::json!({
        "Client": {
            "Platform": {"Name": "kiln"},
            "Version": env!("CARGO_PKG_VERSION"),
            "GitCommit": env!("KILN_GIT_COMMIT"),
            "BuildTime": env!("KILN_BUILD_DATE"),
            "Os": platform.os,
            "Arch": platform.architecture,
        }
    })
}

pub fn version(args: VersionArgs) -> anyhow::Result<ExitCode> {
    let v = version_object();
    match args.format.as_deref().map(Format::parse) {
        Some(Format::Json) => outln!("{}", format::go_json(&v)),
        Some(Format::Template { text, .. }) => outln!("{}", format::render(&text, &v)?),
        _ => {
            let c = &v["Client"];
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            outln!("Client: kiln (no daemon)");
            outln!(" Version:     {}", s("Version"));
            outln!(" Git commit:  {}", s("GitCommit"));
            outln!(" Built:       {}", s("BuildTime"));
            outln!(" OS/Arch:     {}/{}", s("Os"), s("Arch"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// A Go template (`{{.Driver}}`, `{{json .}}`) or `json`
    #[arg(short, long)]
    pub format: Option<String>,
}

pub fn info(root: Option<&Path>, args: InfoArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let registries = kiln_runtime::registry::Options::load()?;
    let i = kiln_runtime::system::info(&store, &registries)?;
    let v = serde_json::to_value(&i)?;
    match args.format.as_deref().map(Format::parse) {
        Some(Format::Json) => outln!("{}", format::go_json(&v)),
        Some(Format::Template { text, .. }) => outln!("{}", format::render(&text, &v)?),
        _ => {
            let size = crate::render::table::size;
            let list = |l: &[String]| {
                if l.is_empty() {
                    "none".to_string()
                } else {
                    l.join(", ")
                }
            };
            outln!("Client: kiln {} (no daemon)", env!("CARGO_PKG_VERSION"));
            outln!("Store:");
            outln!(" Root Dir: {}", i.kiln_root_dir);
            outln!(" Images: {}", i.images);
            outln!(
                " Containers: {} (Running: {}, Paused: {}, Stopped: {})",
                i.containers,
                i.containers_running,
                i.containers_paused,
                i.containers_stopped
            );
            outln!(" Build Cache: {}", size(i.build_cache_size));
            outln!(" Storage Driver: {}", i.driver);
            outln!("Sandbox:");
            outln!(" Rootless: {}", i.rootless);
            if let Some(n) = i.rootless_ids {
                let what = if n > 1 {
                    "root and a subordinate range"
                } else {
                    "root alone: no /etc/subuid range for this user"
                };
                outln!(" Rootless Ids: {n} ({what})");
            }
            if i.rootless {
                match i.rootless_pause {
                    Some(pid) => {
                        outln!(" Rootless Namespaces: the store's (kiln-pause, pid {pid})")
                    }
                    None => outln!(" Rootless Namespaces: this process's own (not shared)"),
                }
            }
            outln!(" Cgroup Version: {}", i.cgroup_version);
            outln!(" Cgroup Driver: {}", i.cgroup_driver);
            outln!(" Cgroup Controllers: {}", list(&i.cgroup_controllers));
            outln!(" Security Options: {}", list(&i.security_options));
            outln!("Host:");
            outln!(" Kernel Version: {}", i.kernel_version);
            outln!(" Operating System: {}", i.operating_system);
            outln!(" OSType: {}", i.os_type);
            outln!(" Architecture: {}", i.architecture);
            outln!(" Emulators: {}", list(&i.emulators));
            outln!(" CPUs: {}", i.ncpu);
            outln!(
                " Total Memory: {}",
                crate::render::table::binary_size(i.mem_total)
            );
            outln!("Registries:");
            outln!(" Insecure Registries: {}", list(&i.insecure_registries));
            outln!(" Registry Mirrors: {}", list(&i.registry_mirrors));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct BinfmtArgs {
    /// Register the QEMU emulators installed (`/usr/lib/binfmt.d`) that are not registered.
    #[arg(long)]
    pub install: bool,
    /// Remove the handler of this name (`qemu-aarch64`).
    #[arg(long, value_name = "NAME")]
    pub uninstall: Vec<String>,
}

/// `kiln system binfmt`: the kernel's emulators for other platforms, and registering them.
pub fn binfmt(args: BinfmtArgs) -> anyhow::Result<ExitCode> {
    use kiln_runtime::binfmt;
    for name in &args.uninstall {
        if binfmt::unregister(name)? {
            outln!("removed {name}");
        } else {
            anyhow::bail!("no binfmt_misc handler {name}");
        }
    }
    if args.install {
        let defs = binfmt::installed(&binfmt::conf_dir())?;
        if defs.is_empty() {
            anyhow::bail!(
                "no emulator is installed in {}: install Debian's qemu-user-static",
                binfmt::conf_dir().display()
            );
        }
        for name in binfmt::register(&defs)? {
            outln!(
                "registered {name} ({})",
                binfmt::platform_of(&name).unwrap_or("?")
            );
        }
    }
    if !args.uninstall.is_empty() || args.install {
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = binfmt::list()?
        .into_iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.platform.clone().unwrap_or_else(|| "-".into()),
                if h.enabled { "yes" } else { "no" }.into(),
                if h.fix_binary() { "yes" } else { "no" }.into(),
                h.interpreter,
            ]
        })
        .collect();
    out!(
        "{}",
        crate::render::table::render(
            &["NAME", "PLATFORM", "ENABLED", "FIX-BINARY", "INTERPRETER"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}
