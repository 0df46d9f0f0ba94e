//! `.dockerignore` with moby/patternmatcher semantics, which differ from
//! gitignore: Go `filepath.Match` syntax plus `**`, `!` exceptions, the last matching line wins,
//! and a pattern that matches a directory excludes everything below it.
//!
//! Quirks kept on purpose, because BuildKit has them: a pattern starting with `**` is a plain
//! suffix test (`**foo` matches `barfoo`), a trailing `**` is a plain prefix test (`foo**`
//! matches `foobar`), and a `[...]` class can match `/`.

/// A malformed pattern (`filepath.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("syntax error in pattern {0:?}")]
    BadPattern(String),
    #[error("illegal exclusion pattern: \"!\"")]
    BareExclusion,
}

/// Lexical path cleaning as Go's `filepath.Clean` does it on Unix.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                _ if rooted => {}
                _ => out.push(".."),
            },
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Reads ignore-file text into patterns (`ignorefile.ReadAll`): BOM removed, `#` lines are
/// comments, whitespace trimmed, blank lines skipped, paths cleaned, a leading `/` removed.
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut pat = if p.is_empty() {
            String::new()
        } else {
            clean(p)
        };
        if pat.len() > 1 && pat.starts_with('/') {
            pat.remove(0);
        }
        out.push(if invert { format!("!{pat}") } else { pat });
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Lit(char),
    /// `*`: any run of non-`/`.
    Star,
    /// `?`: one non-`/`.
    Any,
    /// `**` followed by more: `(.*/)?`.
    DirStar,
    /// `**` at the end after other wildcards: `.*`.
    Rest,
    /// `[...]`: one character (any, including `/`).
    Class {
        negate: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Exact,
    /// Trailing `**`: the text before it is a prefix.
    Prefix(String),
    /// Leading `**`: the text after it is a suffix.
    Suffix(String),
    Tokens(Vec<Tok>),
}

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    exclusion: bool,
    kind: Kind,
}

/// Parses a `[...]` class starting after `[`; returns the class and the index after `]`.
fn parse_class(chars: &[char], mut i: usize, pattern: &str) -> Result<(Tok, usize), IgnoreError> {
    let bad = || IgnoreError::BadPattern(pattern.to_string());
    let negate = chars.get(i) == Some(&'^');
    if negate {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i).ok_or_else(bad)?;
        if c == ']' && !first {
            return Ok((Tok::Class { negate, ranges }, i + 1));
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars.get(i).ok_or_else(bad)?
        } else {
            c
        };
        i += 1;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            i += 1;
            hi = if chars[i] == '\\' {
                i += 1;
                *chars.get(i).ok_or_else(bad)?
            } else {
                chars[i]
            };
            i += 1;
            if hi < lo {
                return Err(bad());
            }
        }
        ranges.push((lo, hi));
    }
}

impl Pattern {
    /// Compiles one pattern line (already read with [`read_patterns`]).
    pub fn new(line: &str) -> Result<Option<Pattern>, IgnoreError> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(None);
        }
        let cleaned = clean(line);
        let (exclusion, text) = match cleaned.strip_prefix('!') {
            Some("") => return Err(IgnoreError::BareExclusion),
            Some(rest) => (true, rest.to_string()),
            None => (false, cleaned),
        };
        // The match type is detected as patternmatcher's `compile` does: exact until a wildcard,
        // a trailing `**` after plain text is a prefix test, a leading `**` a suffix test, and
        // any wildcard after that makes it a full match.
        #[derive(PartialEq)]
        enum Det {
            Exact,
            Prefix,
            Suffix,
            Full,
        }
        let chars: Vec<char> = text.chars().collect();
        let mut toks = Vec::new();
        let mut det = Det::Exact;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let at_start = i == 0;
            i += 1;
            match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        if det == Det::Exact {
                            det = Det::Prefix;
                        } else {
                            toks.push(Tok::Rest);
                            det = Det::Full;
                        }
                    } else {
                        toks.push(Tok::DirStar);
                        det = Det::Full;
                    }
                    if at_start {
                        det = Det::Suffix;
                    }
                }
                '*' => {
                    toks.push(Tok::Star);
                    det = Det::Full;
                }
                '?' => {
                    toks.push(Tok::Any);
                    det = Det::Full;
                }
                '\\' => match chars.get(i) {
                    Some(&n) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                        det = Det::Full;
                    }
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => {
                    let (tok, next) = parse_class(&chars, i, &text)?;
                    toks.push(tok);
                    i = next;
                    det = Det::Full;
                }
                ']' => {
                    toks.push(Tok::Lit(']'));
                    det = Det::Full;
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        let kind = match det {
            Det::Exact => Kind::Exact,
            Det::Prefix => Kind::Prefix(text[..text.len() - 2].to_string()),
            Det::Suffix => Kind::Suffix(text.get(2..).unwrap_or("").to_string()),
            Det::Full => Kind::Tokens(toks),
        };
        Ok(Some(Pattern {
            text,
            exclusion,
            kind,
        }))
    }

    /// Whether the pattern matches `path` (slash-separated, relative to the context root).
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Tokens(toks) => {
                let chars: Vec<char> = path.chars().collect();
                match_tokens(toks, &chars)
            }
        }
    }
}

/// The tokens as a globset glob (compiled with `literal_separator` and `backslash_escape`, so
/// `*` and `?` stop at `/` as in Go's `filepath.Match`, and every literal is escaped, so `{a,b}`
/// is no alternation). `None` where globset cannot say it: a `**` inside a path component
/// (`a**b`, where patternmatcher crosses `/`), and classes that may match `/` (negated ones, or
/// ranges holding `/`); those keep the token matcher.
fn to_glob(toks: &[Tok]) -> Option<String> {
    let mut g = String::new();
    let at_component_start = |g: &str| g.is_empty() || g.ends_with('/');
    for t in toks {
        match t {
            Tok::Lit('/') => g.push('/'),
            Tok::Lit(c) if c.is_alphanumeric() || "-_.,~@%+=:;'\"# ".contains(*c) => g.push(*c),
            Tok::Lit(c) => {
                g.push('\\');
                g.push(*c);
            }
            Tok::Star => g.push('*'),
            Tok::Any => g.push('?'),
            Tok::DirStar if at_component_start(&g) => g.push_str("**/"),
            Tok::Rest if g.ends_with('/') => g.push_str("**"),
            Tok::DirStar | Tok::Rest => return None,
            Tok::Class { negate: true, .. } => return None,
            Tok::Class { ranges, .. } => {
                let special = |c: char| c == '/' || "[]!^-\\".contains(c);
                if ranges
                    .iter()
                    .any(|(lo, hi)| special(*lo) || special(*hi) || (*lo <= '/' && '/' <= *hi))
                {
                    return None;
                }
                g.push('[');
                for (lo, hi) in ranges {
                    g.push(*lo);
                    if hi != lo {
                        g.push('-');
                        g.push(*hi);
                    }
                }
                g.push(']');
            }
        }
    }
    Some(g)
}

/// `glob` with Go's `filepath.Match` rules (`*` and `?` stop at `/`, backslash escapes).
fn go_glob(glob: &str) -> Option<globset::Glob> {
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .ok()
}

/// Whole-string match of tokens against `s`, by dynamic programming over (token, position):
/// O(tokens × length), no backtracking blow-up.
fn match_tokens(toks: &[Tok], s: &[char]) -> bool {
    let n = s.len();
    // reach[j]: the tokens so far can consume exactly s[..j].
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for tok in toks {
        let mut next = vec![false; n + 1];
        for j in 0..=n {
            if !reach[j] {
                continue;
            }
            match tok {
                Tok::Lit(c) => {
                    if s.get(j) == Some(c) {
                        next[j + 1] = true;
                    }
                }
                Tok::Any => {
                    if s.get(j).is_some_and(|c| *c != '/') {
                        next[j + 1] = true;
                    }
                }
                Tok::Class { negate, ranges } => {
                    if let Some(c) = s.get(j) {
                        let inside = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
                        if inside != *negate {
                            next[j + 1] = true;
                        }
                    }
                }
                Tok::Star => {
                    next[j] = true;
                    let mut k = j;
                    while k < n && s[k] != '/' {
                        k += 1;
                        next[k] = true;
                    }
                }
                Tok::DirStar => {
                    next[j] = true;
                    for k in j..n {
                        if s[k] == '/' {
                            next[k + 1] = true;
                        }
                    }
                }
                Tok::Rest => {
                    for v in next.iter_mut().skip(j) {
                        *v = true;
                    }
                }
            }
        }
        reach = next;
    }
    reach[n]
}

/// The tokens of a Go `filepath.Match` pattern: `*` and `?` never match `/`, `[...]` classes,
/// `\` escapes. Used for COPY/ADD source wildcards.
fn filepath_tokens(pattern: &str) -> Result<Vec<Tok>, IgnoreError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::Any),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    toks.push(Tok::Lit(n));
                    i += 1;
                }
                None => return Err(IgnoreError::BadPattern(pattern.to_string())),
            },
            '[' => {
                let (tok, next) = parse_class(&chars, i, pattern)?;
                toks.push(tok);
                i = next;
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

/// A `filepath.Match` pattern compiled once (COPY tries one against every context path).
#[derive(Debug, Clone)]
pub enum FilepathPattern {
    Glob(globset::GlobMatcher),
    /// What globset cannot say (classes that may match `/`).
    Tokens(Vec<Tok>),
}

impl FilepathPattern {
    /// Compiles `pattern` as Go's `filepath.Match` reads it.
    pub fn new(pattern: &str) -> Result<FilepathPattern, IgnoreError> {
        filepath_tokens(pattern).map(FilepathPattern::from_tokens)
    }

    fn from_tokens(toks: Vec<Tok>) -> FilepathPattern {
        match to_glob(&toks)
            .as_deref()
            .and_then(go_glob)
            .map(|g| g.compile_matcher())
        {
            Some(g) => FilepathPattern::Glob(g),
            None => FilepathPattern::Tokens(toks),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            FilepathPattern::Glob(g) => g.is_match(name),
            FilepathPattern::Tokens(t) => {
                let name: Vec<char> = name.chars().collect();
                match_tokens(t, &name)
            }
        }
    }
}

/// Whether `s` holds a `filepath.Match` wildcard.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A compiled `.dockerignore`: the patterns globset can express in one `GlobSet` (one pass
/// over a path answers all of them), the others (patternmatcher's `**` quirks) by hand.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
    set: globset::GlobSet,
    /// For each pattern, its index in `set` when it is there.
    in_set: Vec<Option<usize>>,
}

impl Matcher {
    /// Compiles patterns as read by [`read_patterns`].
    pub fn new<S: AsRef<str>>(lines: &[S]) -> Result<Matcher, IgnoreError> {
        let mut patterns = Vec::new();
        for l in lines {
            if let Some(p) = Pattern::new(l.as_ref())? {
                patterns.push(p);
            }
        }
        let exclusions = patterns.iter().any(|p| p.exclusion);
        let mut builder = globset::GlobSetBuilder::new();
        let mut in_set = Vec::new();
        let mut n = 0;
        for p in &patterns {
            let glob = match &p.kind {
                Kind::Tokens(toks) => to_glob(toks).as_deref().and_then(go_glob),
                _ => None,
            };
            match glob {
                Some(g) => {
                    builder.add(g);
                    in_set.push(Some(n));
                    n += 1;
                }
                None => in_set.push(None),
            }
        }
        let set = builder
            .build()
            .map_err(|e| IgnoreError::BadPattern(e.to_string()))?;
        Ok(Matcher {
            patterns,
            exclusions,
            set,
            in_set,
        })
    }

    /// Compiles ignore-file text.
    pub fn from_file_text(text: &str) -> Result<Matcher, IgnoreError> {
        Matcher::new(&read_patterns(text))
    }

    /// Whether any pattern is an exception (`!`): then an excluded directory must still be
    /// walked, since something below it may be re-included.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether `path` (slash-separated, relative to the context) is excluded: some pattern
    /// matches it or one of its parent directories, and no later exception matches.
    pub fn excludes(&self, path: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let path = clean(path);
        if path == "." {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        // The path and each of its parents, once through the glob set.
        let mut candidates = vec![path.clone()];
        let mut prefix = String::new();
        for dir in &parents {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(dir);
            candidates.push(prefix.clone());
        }
        let mut glob_hit = vec![false; self.set.len()];
        if !self.set.is_empty() {
            for c in &candidates {
                for i in self.set.matches(c.as_str()) {
                    glob_hit[i] = true;
                }
            }
        }
        let mut matched = false;
        for (p, idx) in self.patterns.iter().zip(&self.in_set) {
            if p.exclusion != matched {
                continue;
            }
            let hit = match idx {
                Some(i) => glob_hit[*i],
                None => candidates.iter().any(|c| p.matches(c)),
            };
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        for (i, o) in [
            ("", "."),
            (".", "."),
            ("a/b/../c", "a/c"),
            ("/../x", "/x"),
            ("../x", "../x"),
            ("a//b/./", "a/b"),
            ("/", "/"),
            ("a/..", "."),
            ("../../a/../b", "../../b"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }

    #[test]
    fn ignore_file_rules() {
        let text =
            "\u{feff}# comment\n\n  *.log  \n!/keep.log\n/abs/path/\n  #not-a-comment\n! spaced\n";
        assert_eq!(
            read_patterns(text),
            vec![
                "*.log",
                "!keep.log",
                "abs/path",
                "#not-a-comment",
                "!spaced"
            ]
        );
    }

    #[test]
    fn globset_carries_go_semantics_and_quirks_fall_back() {
        // Braces are literal, `*` stops at `/`, escapes work: through globset.
        let m = FilepathPattern::new("{a,b}*.txt").unwrap();
        assert!(matches!(m, FilepathPattern::Glob(_)));
        assert!(m.matches("{a,b}x.txt") && !m.matches("a.txt") && !m.matches("{a,b}/x.txt"));
        assert!(FilepathPattern::new("a\\*b").unwrap().matches("a*b"));
        assert!(!FilepathPattern::new("a\\*b").unwrap().matches("axb"));
        assert!(FilepathPattern::new("[a-c]?.md").unwrap().matches("bx.md"));
        // A negated class may match `/` in patternmatcher: kept on the token matcher.
        assert!(matches!(
            FilepathPattern::new("[^a]").unwrap(),
            FilepathPattern::Tokens(_)
        ));
        // `**` inside a component crosses `/` in patternmatcher: not globset's meaning.
        let toks = filepath_tokens("x").unwrap();
        assert_eq!(to_glob(&toks).as_deref(), Some("x"));
        let m = Matcher::new(&["a**b"]).unwrap();
        assert!(
            m.excludes("a/x/b"),
            "patternmatcher's a**b crosses directories"
        );
        let m = Matcher::new(&["a/**/b"]).unwrap();
        assert!(m.excludes("a/b") && m.excludes("a/x/y/b") && !m.excludes("a/xb"));
    }
}
