//! `kiln history IMAGE`: an image's history as `docker history` shows it, newest first:
//! IMAGE (the id on the newest row, `<missing>` below, as for BuildKit images), CREATED,
//! CREATED BY (cut to 45 characters unless `--no-trunc`), SIZE (the layer a step made), COMMENT.

use std::process::ExitCode;

use anyhow::bail;

use crate::render::{table, time};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image (a tag or a manifest digest).
    pub image: String,
    /// Do not shorten CREATED BY.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table` (default), `json` (one object per line, docker's field names) or a Go template
    #[arg(long, default_value = "table")]
    pub format: String,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let Some(manifest) = store.resolve(&args.image)? else {
        bail!("no such image: {}", args.image);
    };
    let (m, config, id) = store.image(&manifest)?;
    // Each entry that made a layer takes the next one, bottom first.
    let mut layers = m.layers.iter();
    let mut rows: Vec<(String, Option<i64>, String, u64, String)> = Vec::new();
    for h in &config.history {
        // What the layer holds unpacked, as docker's SIZE.
        let layer = if h.empty_layer { None } else { layers.next() };
        let size = match layer {
            Some(l) => store.layer_content_size(&l.digest)?,
            None => 0,
        };
        rows.push((
            "<missing>".to_string(),
            h.created.as_deref().and_then(time::parse_rfc3339),
            h.created_by.clone().unwrap_or_default(),
            size,
            h.comment.clone().unwrap_or_default(),
        ));
    }
    rows.reverse();
    let short_id = if args.no_trunc {
        id.to_string()
    } else {
        id.hex()[..12].to_string()
    };
    if let Some(first) = rows.first_mut() {
        first.0 = short_id;
    }
    if args.quiet {
        for r in &rows {
            outln!("{}", r.0);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = time::now();
    let since = |t: Option<i64>| {
        t.map_or_else(
            || "N/A".into(),
            |t| format!("{} ago", time::human_duration(now - t)),
        )
    };
    let format = crate::render::format::Format::parse(&args.format);
    crate::render::format::check(&format)?;
    let shown_by = |by: &String| {
        if args.no_trunc || by.chars().count() <= 45 {
            by.clone()
        } else {
            format!("{}…", by.chars().take(44).collect::<String>())
        }
    };
    // docker's fields for each entry (`docker history --format '{{json .}}'`; CreatedBy cut as
    // in the table unless --no-trunc, as docker's).
    let objects: Vec<serde_json::Value> = rows
        .iter()
        .map(|(id, created, by, size, comment)| {
            serde_json::json!({
                "Comment": comment,
                "CreatedAt": created.map(kiln_builder::exec::fsutil::rfc3339),
                "CreatedBy": shown_by(by),
                "CreatedSince": since(*created),
                "ID": id,
                "Size": table::size_precision(*size, 3),
            })
        })
        .collect();
    let text = crate::render::format::rows(
        &format,
        &objects,
        &[
            ("ID", "IMAGE"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
            ("CreatedBy", "CREATED BY"),
        ],
        || {
            let lines: Vec<Vec<String>> = rows
                .iter()
                .map(|(id, created, by, size, comment)| {
                    vec![
                        id.clone(),
                        since(*created),
                        shown_by(by),
                        table::size_precision(*size, 3),
                        comment.clone(),
                    ]
                })
                .collect();
            table::render(
                &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                &lines,
            )
        },
    )?;
    out!("{text}");
    Ok(ExitCode::SUCCESS)
}
