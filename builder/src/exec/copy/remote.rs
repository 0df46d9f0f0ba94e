//! ADD of an http(s) URL: downloaded with its `--checksum` checked, mode 0600 and the
//! server's Last-Modified, as BuildKit writes downloads.

use super::*;

/// Seconds since the epoch of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(super) fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, ..] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as i64
        + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, mi, se] = t.as_slice() else {
        return None;
    };
    Some(fsutil::days_from_civil(y, month, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Downloads an ADD URL into `dir`, checking `--checksum`; the entry and its file name.
pub(super) fn download(
    url: &str,
    checksum: Option<&str>,
    dir: &std::path::Path,
    n: usize,
    span: Span,
) -> Result<(SrcEntry, String), BuildError> {
    use sha2::Digest as _;
    let err = |m: String| BuildError::at(span, format!("ADD {url}: {m}"));
    let resp = ureq::get(url).call().map_err(|e| err(e.to_string()))?;
    let mtime = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or(0);
    let host = dir.join(format!("url{n}"));
    let mut out = std::fs::File::create(&host).map_err(|e| err(e.to_string()))?;
    let mut reader = resp.into_body().into_reader();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let k = std::io::Read::read(&mut reader, &mut buf).map_err(|e| err(e.to_string()))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        std::io::Write::write_all(&mut out, &buf[..k]).map_err(|e| err(e.to_string()))?;
        size += k as u64;
    }
    let digest = Digest::from_sha256(hasher);
    if let Some(want) = checksum {
        if want != digest.to_string() {
            return Err(err(format!(
                "checksum mismatch: expected {want}, got {digest}"
            )));
        }
    }
    let path_part = url.split(['?', '#']).next().unwrap_or(url);
    let name = path_part
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once('/').map(|(_, p)| p))
        .and_then(|p| p.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .unwrap_or("")
        .to_string();
    // Mode 0600 and the server's Last-Modified, as BuildKit writes downloads.
    let entry = SrcEntry {
        path: name.clone().into(),
        kind: SrcKind::File {
            size,
            host,
            xattrs: Vec::new(),
        },
        mode: 0o600,
        mtime,
        owner: None,
        link: None,
        fingerprint: format!("url {digest}"),
    };
    Ok((entry, name))
}

/// Downloads every URL source into `tmpdir`: (destination path, the downloaded file as a
/// source). Into a directory destination, each file is named after its URL.
pub(super) fn download_all(
    urls: &[String],
    checksum: Option<&str>,
    tmpdir: &std::path::Path,
    (dest_rel, dest_is_dir): (&[u8], bool),
    span: Span,
) -> Result<Vec<(BString, SrcEntry)>, BuildError> {
    let mut downloaded = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        std::fs::create_dir_all(tmpdir)
            .map_err(|e| BuildError::Other(format!("{}: {e}", tmpdir.display())))?;
        let (entry, name) = download(url, checksum, tmpdir, n, span)?;
        let target = if dest_is_dir {
            if name.is_empty() {
                return Err(BuildError::at(
                    span,
                    format!(
                        "ADD {url}: cannot take a file name from the URL; give a destination file"
                    ),
                ));
            }
            join(dest_rel, name.as_bytes())
        } else {
            dest_rel.into()
        };
        downloaded.push((target, entry));
    }
    Ok(downloaded)
}
