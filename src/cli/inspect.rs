//! `kiln inspect NAME...`: docker-like JSON for containers and images (a container's name or id
//! first, as docker looks them up; `--type` to choose).

use std::process::ExitCode;

use anyhow::bail;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Container,
    Image,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this kind of object.
    #[arg(long = "type", value_enum, value_name = "container|image")]
    pub kind: Option<Kind>,
    /// A Go template run on each object (`{{.State.Pid}}`, `{{json .Config.Env}}`), or `json`
    #[arg(short, long)]
    pub format: Option<String>,
    /// Containers (names or ID prefixes) or images (tags, IDs or manifest digests).
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let mut out = Vec::new();
    for name in &args.images {
        if args.kind != Some(Kind::Image) {
            // A container by its exact name, or by an id prefix of at least 3 hex digits.
            let by_id = name.len() >= 3 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if let Some(c) = store
                .find_container(name)?
                .filter(|c| c.name == *name || by_id)
            {
                out.push(kiln_runtime::container::control::inspect(&store, &c)?);
                continue;
            }
        }
        match store.resolve(name)? {
            Some(d) if args.kind != Some(Kind::Container) => out.push(store.inspect(&d)?),
            _ => bail!("no such object: {name}"),
        }
    }
    match args
        .format
        .as_deref()
        .map(crate::render::format::Format::parse)
    {
        Some(crate::render::format::Format::Template { text, .. }) => {
            // One line per object, as docker's.
            for o in &out {
                outln!("{}", crate::render::format::render(&text, o)?);
            }
        }
        _ => outln!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(ExitCode::SUCCESS)
}
