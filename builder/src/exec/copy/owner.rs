//! `--chown` and USER names resolved in the destination image's own `/etc/passwd` and
//! `/etc/group`, read from its layers.

use super::*;

/// A text file of the stage's filesystem (`None` when absent), read from its layer (the
/// caller has brought the view up to date).
pub(crate) fn image_file(
    ctx: &Ctx<'_>,
    st: &StageState,
    path: &str,
) -> Result<Option<String>, BuildError> {
    let Some(node) = st.view()?.get(path) else {
        return Ok(None);
    };
    let Some(layer) = st.layers.get(node.layer) else {
        return Ok(None);
    };
    let blob =
        Digest::parse(&layer.descriptor.digest).map_err(|e| BuildError::Other(e.to_string()))?;
    ctx.store.ensure_blob(&blob)?;
    let r =
        open_layer(&ctx.store.blob_path(&blob)).map_err(|e| BuildError::Other(e.to_string()))?;
    Ok(read_file(r, path)
        .map_err(|e| BuildError::Other(e.to_string()))?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// `--chown` as BuildKit's `readUser` resolves it: a number is a uid (and the gid too, unless a
/// group is given); a name comes from the image's /etc/passwd with its primary group; a group
/// name from /etc/group. A user name the image lacks is uid and gid 0; a group name it lacks
/// keeps the user's gid. Either is said in a warning, never an error.
pub(crate) fn resolve_chown(
    ctx: &Ctx<'_>,
    st: &StageState,
    spec: &str,
    span: Span,
) -> Result<(u32, u32), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |path: &str| image_file(ctx, st, path);
    let mut missing = Vec::new();
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => match read("/etc/passwd")?
            .as_deref()
            .and_then(|p| fsutil::lookup_id(p, user))
        {
            Some((id, primary)) => (id, primary.unwrap_or(0)),
            None => {
                missing.push(format!("user {user} is not in /etc/passwd: uid and gid 0"));
                (0, 0)
            }
        },
    };
    if let Some(g) = group {
        match g.parse::<u32>() {
            Ok(n) => gid = n,
            Err(_) => match read("/etc/group")?
                .as_deref()
                .and_then(|t| fsutil::lookup_id(t, g))
            {
                Some((id, _)) => gid = id,
                None => missing.push(format!("group {g} is not in /etc/group: gid {gid}")),
            },
        }
    }
    if !missing.is_empty() {
        (ctx.on_event)(crate::exec::Event::Warning {
            message: format!(
                "line {}: --chown={spec}: {} (as BuildKit)",
                span.start.line(),
                missing.join("; ")
            ),
        });
    }
    Ok((uid, gid))
}
