//! `kiln network create|ls|inspect|rm|prune|connect|disconnect`: docker's network commands,
//! same flags and output.

use std::{path::Path, process::ExitCode};

use anyhow::bail;
use kiln_runtime::{container, network};

use crate::render::{format::Format, table};

#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a user network: a bridge of its own, containers resolving each other by name.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks' details as JSON.
    Inspect(InspectArgs),
    /// Remove user networks no running container is on.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove every user network no running container is on.
    Prune(PruneArgs),
    /// Connect a container to a network (at once if it runs, and at each start).
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Another name the container answers to on the network.
    #[arg(long, value_name = "NAME")]
    pub alias: Vec<String>,
    /// The container's IPv4 address on the network.
    #[arg(long, value_name = "IP")]
    pub ip: Option<std::net::Ipv4Addr>,
    pub network: String,
    pub container: String,
}

#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    /// Accepted for docker's scripts: kiln's disconnect needs no forcing.
    #[arg(short, long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The driver: only `bridge`.
    #[arg(short, long, default_value = "bridge", value_name = "DRIVER")]
    pub driver: String,
    /// The subnet (`10.91.7.0/24`); else a free /24 of 10.91.0.0/16.
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// The gateway (the bridge's address); else the subnet's first.
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// No route out of the network.
    #[arg(long)]
    pub internal: bool,
    /// A label `K=V`.
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only the IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Full IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// `table`, `json` or a Go template (`{{.Name}}`).
    #[arg(long, default_value = "", value_name = "FORMAT")]
    pub format: String,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A Go template run on each network.
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Do not ask.
    #[arg(short, long)]
    pub force: bool,
}

/// A network as `ls` and `inspect` show it: docker's three predefined ones, then the user's.
struct Shown {
    name: String,
    id: String,
    driver: &'static str,
    json: serde_json::Value,
}

fn all(store: &kiln_runtime::store::Store) -> anyhow::Result<Vec<Shown>> {
    let predefined =
        |name: &str, driver: &'static str, id: String, config: serde_json::Value| Shown {
            name: name.to_string(),
            id: id.clone(),
            driver,
            json: serde_json::json!({
                "Name": name, "Id": id, "Scope": "local", "Driver": driver, "EnableIPv6": false,
                "IPAM": {"Driver": "default", "Options": null, "Config": config},
                "Internal": false, "Attachable": false, "Ingress": false,
                "Containers": {}, "Options": {}, "Labels": {},
            }),
        };
    let bridge = network::Def::bridge();
    let mut out = vec![
        predefined(
            "bridge",
            "bridge",
            bridge.id.clone(),
            serde_json::json!([{"Subnet": format!("{}/{}", bridge.subnet, bridge.prefix),
                                "Gateway": bridge.gateway.to_string()}]),
        ),
        predefined(
            "host",
            "host",
            kiln_runtime::digest::Digest::of(b"kiln host network")
                .hex()
                .to_string(),
            serde_json::json!([]),
        ),
        predefined(
            "none",
            "null",
            kiln_runtime::digest::Digest::of(b"kiln none network")
                .hex()
                .to_string(),
            serde_json::json!([]),
        ),
    ];
    if let Some(b) = out.first_mut() {
        b.json["Containers"] = containers_json(store, &bridge.id);
    }
    for n in store.networks()? {
        out.push(Shown {
            name: n.name.clone(),
            id: n.id.clone(),
            driver: "bridge",
            json: serde_json::json!({
                "Name": n.name, "Id": n.id,
                "Created": kiln_runtime::timefmt::rfc3339(n.created),
                "Scope": "local", "Driver": "bridge", "EnableIPv6": false,
                "IPAM": {"Driver": "default", "Options": {},
                         "Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
                "Internal": n.internal, "Attachable": false, "Ingress": false,
                "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
                "Containers": containers_json(store, &n.id),
                "Options": {}, "Labels": n.labels,
            }),
        });
    }
    Ok(out)
}

/// docker's `Containers` of a network: its running containers' endpoints.
fn containers_json(store: &kiln_runtime::store::Store, id: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (cid, a) in network::endpoints(store, id) {
        let name = store
            .find_container(&cid)
            .ok()
            .flatten()
            .map(|c| c.name)
            .unwrap_or_default();
        m.insert(
            cid.clone(),
            serde_json::json!({
                "Name": name, "EndpointID": cid, "MacAddress": a.mac,
                "IPv4Address": format!("{}/{}", a.ip, a.def.prefix), "IPv6Address": "",
            }),
        );
    }
    serde_json::Value::Object(m)
}

pub fn run(root: Option<&Path>, cmd: NetworkCommand) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    match cmd {
        NetworkCommand::Create(a) => {
            if a.driver != "bridge" {
                bail!(
                    "network driver {:?}: kiln has the bridge driver only",
                    a.driver
                );
            }
            let labels = super::labels(&a.label);
            let n = network::create(
                &store,
                &a.name,
                (a.subnet.as_deref(), a.gateway.as_deref()),
                a.internal,
                &labels,
            )?;
            outln!("{}", n.id);
        }
        NetworkCommand::Ls(a) => {
            let list = all(&store)?;
            let short = |id: &str| {
                if a.no_trunc {
                    id.to_string()
                } else {
                    id[..12.min(id.len())].to_string()
                }
            };
            if a.quiet {
                for n in &list {
                    outln!("{}", short(&n.id));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let format = Format::parse(&a.format);
            crate::render::format::check(&format)?;
            let objects: Vec<serde_json::Value> = list
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "ID": short(&n.id), "Name": n.name, "Driver": n.driver,
                        "Scope": "local", "IPv6": "false",
                        "Internal": n.json["Internal"].as_bool().unwrap_or(false).to_string(),
                        "Labels": "", "CreatedAt": "",
                    })
                })
                .collect();
            let text =
                crate::render::format::rows(&format, &objects, &[("ID", "NETWORK ID")], || {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|n| {
                            vec![
                                short(&n.id),
                                n.name.clone(),
                                n.driver.to_string(),
                                "local".into(),
                            ]
                        })
                        .collect();
                    table::render(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows)
                })?;
            out!("{text}");
        }
        NetworkCommand::Inspect(a) => {
            let list = all(&store)?;
            let mut out = Vec::new();
            for n in &a.names {
                match list
                    .iter()
                    .find(|s| s.name == *n || s.id == *n || (n.len() >= 3 && s.id.starts_with(n)))
                {
                    Some(s) => out.push(s.json.clone()),
                    None => bail!("network {n} not found"),
                }
            }
            match a.format.as_deref().map(Format::parse) {
                Some(Format::Template { text, .. }) => {
                    for o in &out {
                        outln!("{}", crate::render::format::render(&text, o)?);
                    }
                }
                _ => outln!("{}", serde_json::to_string_pretty(&out)?),
            }
        }
        NetworkCommand::Rm(a) => {
            let mut failed = false;
            for n in &a.names {
                match remove(&store, n) {
                    Ok(()) => outln!("{n}"),
                    Err(e) => {
                        eprintln!("kiln: error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        NetworkCommand::Connect(a) => {
            let asked = container::networks::ConnectOptions {
                aliases: a.alias,
                ip: a.ip,
            };
            container::networks::connect(&store, &a.network, &a.container, &asked)?;
        }
        NetworkCommand::Disconnect(a) => {
            container::networks::disconnect(&store, &a.network, &a.container)?;
        }
        NetworkCommand::Prune(a) => {
            if !super::confirm(
                "This will remove all custom networks not used by at least one container.",
                a.force,
            )? {
                return Ok(ExitCode::SUCCESS);
            }
            let gone = network::prune(&store)?;
            if !gone.is_empty() {
                outln!("Deleted Networks:");
                for n in gone {
                    outln!("{n}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes user network `what`, refused while a running container is on it (docker's rule).
fn remove(store: &kiln_runtime::store::Store, what: &str) -> anyhow::Result<()> {
    if matches!(what, "bridge" | "host" | "none") {
        bail!("{what} is a pre-defined network and cannot be removed");
    }
    let Some(n) = store.find_network(what)? else {
        bail!("network {what} not found");
    };
    let active = network::endpoints(store, &n.id);
    if !active.is_empty() {
        bail!(
            "error while removing network: network {} id {} has active endpoints",
            n.name,
            n.id
        );
    }
    store.remove_network(&n.name)?;
    Ok(())
}
