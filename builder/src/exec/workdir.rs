//! WORKDIR: a step that changes the config and, when the directory is missing, writes a layer
//! holding it (as BuildKit's `dispatchWorkdir` makes it with `MkdirAll`).

use std::collections::BTreeMap;

use kiln_parser::span::Span;

use super::{BuildError, Ctx, StageState, copy, fsutil};
use crate::{cache::key::Step, image::layer::EntryMeta};

/// `WORKDIR PATH`: the config's working directory (relative to the one before), and its
/// directory made, owned by the current USER, when it is missing. Returns whether the layer
/// was cached.
pub(super) fn workdir(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    path: &str,
    name: &str,
    span: Span,
) -> Result<bool, BuildError> {
    let w = ctx.expand(st, path, span)?;
    let abs = fsutil::absolute(&st.workdir(), &w);
    st.config.config.working_dir = abs.clone();
    let abs = abs.as_str();
    st.sync_view(ctx.store)?;
    let rel = fsutil::resolve_all_in_root(st.view()?, abs);
    if let Some(file) = fsutil::not_a_directory(st.view()?, &rel, true) {
        return Err(BuildError::at(
            span,
            format!("WORKDIR {abs}: /{file} is not a directory"),
        ));
    }
    if rel.is_empty() || st.view()?.is_dir(&rel) {
        ctx.history(st, format!("WORKDIR {abs}"), true);
        return Ok(false);
    }
    // BuildKit creates WORKDIR as the current USER.
    let user = st.config.config.user.clone();
    let owner = if user.is_empty() {
        (0, 0)
    } else {
        copy::resolve_chown(ctx, st, &user, span)?
    };
    let step = Step::new("MKDIR")
        .field("path", format!("/{}", fsutil::key_text(&rel)))
        .field("owner", format!("{}:{}", owner.0, owner.1));
    let dir = copy::Planned {
        item: copy::Item::Dir,
        meta: EntryMeta {
            mode: 0o755,
            uid: owner.0,
            gid: owner.1,
            mtime: ctx.now,
            ..Default::default()
        },
        fingerprint: "dir 755".into(),
    };
    copy::commit_layer(
        ctx,
        st,
        step,
        (BTreeMap::new(), None),
        BTreeMap::from([(rel, dir)]),
        owner,
        name,
        // BuildKit's WORKDIR history line has no `# buildkit` mark (it passes no state).
        &format!("WORKDIR {abs}"),
        false,
    )
}
