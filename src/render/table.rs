//! Plain aligned tables and human sizes, as `docker images` prints them.

/// Columns padded to their widest cell, separated by three spaces.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Decimal units, as docker prints sizes (`1.03MB`).
pub use kiln_parser::instruction::values::format_size as size;
/// With a given number of significant digits (docker's `images` and `history` use 3).
pub use kiln_parser::instruction::values::format_size_precision as size_precision;

/// Binary units with four significant digits, as docker prints memory (`1.5MiB`, `23.41GiB`).
pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    // Go's %.4g: four significant digits, no trailing zeros.
    let digits = if v >= 1000.0 {
        0
    } else if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let text = format!("{v:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[i])
}

#[cfg(test)]
mod tests {
    #[test]
    fn binary_sizes_as_docker_prints_them() {
        assert_eq!(super::binary_size(0), "0B");
        assert_eq!(super::binary_size(1536 * 1024), "1.5MiB");
        assert_eq!(super::binary_size(64 << 20), "64MiB");
        assert_eq!(super::binary_size(25_136_000_000), "23.41GiB");
    }
}
