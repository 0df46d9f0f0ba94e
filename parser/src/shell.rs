//! Shell-word processing as BuildKit's frontend does it (`shell/lex.go` semantics): quotes,
//! escapes, `$var`/`${var}` expansion with every modifier, and word splitting after expansion.
//!
//! The builder calls [`Lexer::expand`] with the environment of each step (ENV + in-scope ARGs);
//! the parser uses the raw modes to find heredoc markers and to show values without expanding.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ShellError;

/// Where variable values come from.
pub trait Env {
    /// The value of `name`, or `None` when it is not set (an empty value is set).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// Pairs in declaration order; a later pair wins, as in `KEY=a KEY=b`.
impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An environment with no variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// The result of processing one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    /// The processed text, quotes removed and variables substituted, spaces kept.
    pub value: String,
    /// The text split into words after substitution (quoted spaces do not split).
    pub words: Vec<String>,
    /// Variable names that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Variable names that were used without a fallback and were not set (`${X:-d}`, `${X:+w}`
    /// and `${X:?m}` name a fallback and are not listed): what the `UndefinedVar` check reports.
    pub unmatched: BTreeSet<String>,
}

/// Configuration of the word processor.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    /// The escape character (`\` by default, `` ` `` with `# escape=``).
    pub escape: char,
    /// Keep quote characters in the output (used to detect quoted heredoc delimiters).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave unset variables as written (`$X`, `${X:-y}`) instead of expanding them to "".
    pub skip_unset: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
        }
    }

    /// Processes `word` against `env`.
    pub fn expand(&self, word: &str, env: &dyn Env) -> Result<Expanded, ShellError> {
        let mut sc = Scanner {
            chars: word.chars().collect(),
            pos: 0,
            lex: *self,
            raw_escapes: self.raw_escapes,
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        };
        let (value, words) = sc.process_until(None, self.raw_escapes)?;
        Ok(Expanded {
            value,
            words,
            matched: sc.matched,
            unmatched: sc.unmatched,
        })
    }

    /// Convenience: the processed text only.
    pub fn expand_str(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        self.expand(word, env).map(|e| e.value)
    }
}

/// Accumulates words, splitting on unquoted whitespace.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Scanner<'a> {
    chars: Vec<char>,
    pos: usize,
    lex: Lexer,
    raw_escapes: bool,
    env: &'a dyn Env,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    /// How many [`Scanner::process_until`] calls are under way.
    depth: usize,
}

/// How deeply substitutions may nest (`${a:-${b:-...}}`); real Dockerfiles use a few levels.
pub const MAX_DEPTH: usize = 100;

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// Processes until `stop` (consumed) or the end of input.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ShellError> {
        // Each nested `${..}` recurses: bounded, so a hostile word cannot exhaust the stack.
        if self.depth >= MAX_DEPTH {
            return Err(ShellError::TooDeep(MAX_DEPTH));
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.process_until_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn process_until_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let v = self.dollar()?;
                    result.push_str(&v);
                    words.add_string(&v);
                }
                '\'' => {
                    let v = self.single_quote()?;
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                '"' => {
                    let v = self.double_quote()?;
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape escapes the next character, except at the end of input.
                        let Some(next) = self.next() else { break };
                        words.add_raw_char(next);
                        result.push(next);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(ShellError::Unterminated(stop));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, ShellError> {
        // Everything up to the next single quote is literal; a single quote cannot be escaped.
        let mut out = String::new();
        self.pos += 1;
        if self.lex.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ShellError> {
        // Literal except `$` expansions; the escape character escapes only `"`, `$` and itself.
        let mut out = String::new();
        self.pos += 1;
        if self.lex.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.pos += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            _ => {}
        }
        let name = self.name();
        let Some(mut op) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        let mut ops = op.to_string();
        match op {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = op == ':';
                if null_is_unset {
                    let Some(next) = self.next() else {
                        return Err(ShellError::MissingBrace);
                    };
                    op = next;
                    ops.push(op);
                }
                let pattern_op = op == '#' || op == '%';
                if null_is_unset && pattern_op {
                    // As BuildKit's current lexer: `:` combined with `#`/`%` is an error.
                    return Err(ShellError::UnsupportedModifier(ops));
                }
                let word = match self.process_until(Some('}'), pattern_op) {
                    Ok((w, _)) => w,
                    Err(_) if self.peek().is_none() => return Err(ShellError::MissingBrace),
                    Err(e) => return Err(e),
                };
                let seen_unguarded = self.unmatched.contains(&name);
                let value = self.get_env(&name);
                if value.is_none() && !seen_unguarded && matches!(op, '-' | '+' | '?') {
                    self.unmatched.remove(&name);
                }
                if self.lex.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{ops}{word}}}"));
                }
                let empty = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match op {
                    '-' => Ok(if empty {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty { String::new() } else { word }),
                    '?' => {
                        let default = match value {
                            None => "is not allowed to be unset",
                            Some(ref v) if null_is_unset && v.is_empty() => {
                                "is not allowed to be empty"
                            }
                            Some(v) => return Ok(v),
                        };
                        let message = if word.is_empty() {
                            default.to_string()
                        } else {
                            word
                        };
                        Err(ShellError::Required { name, message })
                    }
                    '#' | '%' => {
                        let (greedy, pat) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let glob = Glob::compile(&pat)?;
                        let value: Vec<char> = value.unwrap_or_default().chars().collect();
                        Ok(if op == '#' {
                            glob.trim_prefix(&value, greedy)
                        } else {
                            glob.trim_suffix(&value, greedy)
                        })
                    }
                    _ => Err(ShellError::UnsupportedModifier(ops)),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = match self.process_until(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(_) if self.peek().is_none() => return Err(ShellError::MissingSlash),
                    Err(e) => return Err(e),
                };
                let replacement = match self.process_until(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(_) if self.peek().is_none() => return Err(ShellError::MissingBrace),
                    Err(e) => return Err(e),
                };
                let value = self.get_env(&name);
                let Some(value) = value else {
                    if self.lex.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                let glob = Glob::compile(&pattern)?;
                let chars: Vec<char> = value.chars().collect();
                Ok(glob.replace(&chars, &replacement, all))
            }
            _ => Err(ShellError::UnsupportedModifier(ops)),
        }
    }
}

/// A `${v#pat}` / `${v/pat/rep}` pattern: `*` any run, `?` one char, `\*` `\?` `\\` literals.
#[derive(Debug)]
struct Glob {
    toks: Vec<Tok>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

impl Glob {
    fn compile(pattern: &str) -> Result<Glob, ShellError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => match chars.get(i) {
                    // `\}` and `\/` are escaped only to get past the ${} parser.
                    Some('}' | '/') => {}
                    Some(&n @ ('*' | '?' | '\\')) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    other => {
                        return Err(ShellError::InvalidEscape {
                            pattern: pattern.to_string(),
                            ch: other.copied().unwrap_or(' '),
                        });
                    }
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Glob { toks })
    }

    /// Whether the whole of `s` matches (iterative wildcard matching, no recursion).
    fn matches(&self, s: &[char]) -> bool {
        let (p, mut pi, mut si) = (&self.toks, 0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(Tok::Star) => {
                    star = Some((pi, si));
                    pi += 1;
                }
                Some(Tok::Any) => {
                    pi += 1;
                    si += 1;
                }
                Some(Tok::Lit(c)) if *c == s[si] => {
                    pi += 1;
                    si += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        pi = sp + 1;
                        si = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|t| *t == Tok::Star)
    }

    fn trim_prefix(&self, v: &[char], greedy: bool) -> String {
        let mut lens: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=v.len()).rev())
        } else {
            Box::new(0..=v.len())
        };
        match lens.find(|&k| self.matches(&v[..k])) {
            Some(k) => v[k..].iter().collect(),
            None => v.iter().collect(),
        }
    }

    fn trim_suffix(&self, v: &[char], greedy: bool) -> String {
        let n = v.len();
        let mut lens: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=n).rev())
        } else {
            Box::new(0..=n)
        };
        match lens.find(|&k| self.matches(&v[n - k..])) {
            Some(k) => v[..n - k].iter().collect(),
            None => v.iter().collect(),
        }
    }

    /// The end of the longest match starting at `start`.
    fn longest_at(&self, v: &[char], start: usize) -> Option<usize> {
        (start..=v.len())
            .rev()
            .find(|&e| self.matches(&v[start..e]))
    }

    fn replace(&self, v: &[char], rep: &str, all: bool) -> String {
        let mut out = String::new();
        let mut p = 0;
        let mut last_end: Option<usize> = None;
        let mut replaced = false;
        while p <= v.len() {
            let m = if replaced && !all {
                None
            } else {
                self.longest_at(v, p)
                    .filter(|&e| !(e == p && last_end == Some(p)))
            };
            match m {
                Some(e) => {
                    out.push_str(rep);
                    replaced = true;
                    last_end = Some(e);
                    if e > p {
                        p = e;
                    } else {
                        if let Some(c) = v.get(p) {
                            out.push(*c);
                        }
                        p += 1;
                    }
                }
                None => {
                    if let Some(c) = v.get(p) {
                        out.push(*c);
                    }
                    p += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("A", "a"), ("E", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn words_split_after_expansion() {
        let mut e = env();
        e.insert("X".into(), "1 2".into());
        let r = Lexer::default().expand("a $X \"b c\"", &e).unwrap();
        assert_eq!(r.words, vec!["a", "1", "2", "b c"]);
        assert_eq!(r.value, "a 1 2 b c");
    }

    #[test]
    fn skip_unset_keeps_text() {
        let lex = Lexer {
            skip_unset: true,
            ..Lexer::default()
        };
        assert_eq!(
            lex.expand_str("$NOPE ${A} ${U:-x}", &env()).unwrap(),
            "$NOPE a ${U:-x}"
        );
    }

    #[test]
    fn unmatched_names_are_reported() {
        let r = Lexer::default()
            .expand("$A $B ${C:-x} ${D#x}", &env())
            .unwrap();
        assert_eq!(r.unmatched.into_iter().collect::<Vec<_>>(), vec!["B", "D"]);
        assert_eq!(r.matched.into_iter().collect::<Vec<_>>(), vec!["A"]);
    }
}
