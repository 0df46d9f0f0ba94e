//! `kiln top` and `kiln stats`: a running container's processes and use of resources.

use std::{path::Path, process::ExitCode, time::Duration};

use kiln_runtime::container::stats;

use crate::render::table;

#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct TopArgs {
    /// The container (name or ID prefix).
    pub container: String,
    /// Options for `ps` (default `-ef`).
    #[arg(allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// One reading, then exit (otherwise a new one each second until interrupted).
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// `table` (docker's columns), `json` (one object per container per reading) or a Go
    /// template (`{{.Name}} {{.CPUPerc}}`)
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Containers (names or ID prefixes; default: every running one).
    pub containers: Vec<String>,
}

pub fn top(root: Option<&Path>, args: TopArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let (header, rows) = stats::top(&store, &args.container, &args.ps_options)?;
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    out!("{}", table::render(&headers, &rows));
    Ok(ExitCode::SUCCESS)
}

pub fn stats(root: Option<&Path>, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    crate::render::format::check(&crate::render::format::Format::parse(&args.format))?;
    let names: Vec<String> = if args.containers.is_empty() {
        store
            .containers()?
            .into_iter()
            .filter(|c| c.state().is_live())
            .map(|c| c.id)
            .collect()
    } else {
        args.containers.clone()
    };
    let read = |names: &[String]| -> anyhow::Result<Vec<_>> {
        let t = std::time::Instant::now();
        let mut out = Vec::new();
        for n in names {
            out.push(stats::sample(&store, n)?);
        }
        Ok(out.into_iter().map(|s| (s, t)).collect())
    };
    // CPU % is the CPU time used between two readings over the time between them (100% is one
    // CPU), as docker's.
    let mut before = read(&names)?;
    loop {
        std::thread::sleep(Duration::from_millis(if args.no_stream {
            500
        } else {
            1000
        }));
        let after = read(&names)?;
        let mut rows = Vec::new();
        let mut objects = Vec::new();
        for (((c, s), t1), ((_, s0), t0)) in after.iter().zip(&before) {
            let wall = t1.duration_since(*t0).as_nanos().max(1) as f64;
            let cpu = s.cpu_ns.saturating_sub(s0.cpu_ns) as f64 / wall * 100.0;
            let mem_pct = if s.memory_limit > 0 {
                s.memory as f64 / s.memory_limit as f64 * 100.0
            } else {
                0.0
            };
            // docker's fields (`docker stats --format '{{json .}}'`).
            objects.push(serde_json::json!({
                "BlockIO": format!("{} / {}", table::size(s.block_read), table::size(s.block_write)),
                "CPUPerc": format!("{cpu:.2}%"),
                "Container": &c.id[..12],
                "ID": &c.id[..12],
                "MemPerc": format!("{mem_pct:.2}%"),
                "MemUsage": format!("{} / {}", table::binary_size(s.memory), table::binary_size(s.memory_limit)),
                "Name": c.name,
                "NetIO": format!("{} / {}", table::size(s.net_rx), table::size(s.net_tx)),
                "PIDs": s.pids.to_string(),
            }));
            rows.push(vec![
                c.id[..12].to_string(),
                c.name.clone(),
                format!("{cpu:.2}%"),
                format!(
                    "{} / {}",
                    table::binary_size(s.memory),
                    table::binary_size(s.memory_limit)
                ),
                format!("{mem_pct:.2}%"),
                format!("{} / {}", table::size(s.net_rx), table::size(s.net_tx)),
                format!(
                    "{} / {}",
                    table::size(s.block_read),
                    table::size(s.block_write)
                ),
                s.pids.to_string(),
            ]);
        }
        let format = crate::render::format::Format::parse(&args.format);
        if format != crate::render::format::Format::Table {
            let text = crate::render::format::rows(
                &format,
                &objects,
                &[
                    ("ID", "CONTAINER ID"),
                    ("Container", "CONTAINER"),
                    ("CPUPerc", "CPU %"),
                    ("MemUsage", "MEM USAGE / LIMIT"),
                    ("MemPerc", "MEM %"),
                    ("NetIO", "NET I/O"),
                    ("BlockIO", "BLOCK I/O"),
                ],
                String::new,
            )?;
            out!("{text}");
        } else {
            let text = table::render(
                &[
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "NET I/O",
                    "BLOCK I/O",
                    "PIDS",
                ],
                &rows,
            );
            if !args.no_stream && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                // Repaint in place, as docker's live view.
                out!("\x1b[2J\x1b[H");
            }
            out!("{text}");
        }
        if args.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        before = after;
    }
}
