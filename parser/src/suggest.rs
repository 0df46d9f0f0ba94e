//! "Did you mean" suggestions for misspelt keywords, flags and options (Levenshtein distance).

/// Edit distance between two strings by characters, counting an adjacent transposition as one
/// edit (optimal string alignment), so `cpoy` is one step from `copy`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate within a distance of about a third of the word, compared without case.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let limit = (w.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (distance(&w, &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `message` with ` (did you mean X?)` appended when a close candidate exists.
pub fn with_suggestion(message: String, word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates) {
        Some(c) => format!("{message} (did you mean {c}?)"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words() {
        assert_eq!(closest("RUNN", &["RUN", "COPY"]), Some("RUN"));
        assert_eq!(closest("cpoy", &["RUN", "COPY"]), Some("COPY"));
        assert_eq!(closest("zzzzzz", &["RUN", "COPY"]), None);
    }
}
