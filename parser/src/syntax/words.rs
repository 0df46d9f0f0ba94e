//! Argument splitting as BuildKit's line parser does it, per instruction family:
//! whitespace-delimited words, shell-like words that keep their quotes (ENV/LABEL/ARG), and the
//! JSON exec form with its silent fallback to shell form.

/// A word and its byte range in the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// BuildKit's `reWhitespace` (`[\t\v\f\r ]+`).
pub(crate) fn is_delim(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Splits on runs of whitespace; quotes mean nothing here (`COPY "a b" c` gives `"a`, `b"`, `c`).
pub(crate) fn split_whitespace(text: &str, base: usize) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (is_delim(c), start) {
            (true, Some(s)) => {
                out.push(Word {
                    text: text[s..i].to_string(),
                    start: base + s,
                    end: base + i,
                });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    out
}

/// Splits into words on unquoted whitespace, keeping quotes and escapes in the words
/// (BuildKit `parseWords`): used for ENV, LABEL and ARG.
pub(crate) fn split_shell_words(text: &str, escape: char, base: usize) -> Vec<Word> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    let mut blank_ok = false;
    let mut i = 0;
    let push = |out: &mut Vec<Word>, word: &mut String, start: usize, end: usize| {
        out.push(Word {
            text: std::mem::take(word),
            start: base + start,
            end: base + end,
        });
    };
    while i < chars.len() {
        let (pos, ch) = chars[i];
        match phase {
            Phase::Spaces => {
                if ch.is_whitespace() {
                    i += 1;
                    continue;
                }
                phase = Phase::Word;
                start = pos;
                continue;
            }
            Phase::Word => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        push(&mut out, &mut word, start, pos);
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                    i += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if i + 1 == chars.len() {
                        i += 1;
                        continue; // an escape at the very end is dropped
                    }
                    // Outside quotes an escape and the next char are kept as they are.
                    word.push(ch);
                    i += 1;
                    word.push(chars[i].1);
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    if i + 1 == chars.len() {
                        phase = Phase::Word;
                        i += 1;
                        continue;
                    }
                    word.push(ch);
                    i += 1;
                    word.push(chars[i].1);
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
            }
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        push(&mut out, &mut word, start, text.len());
    }
    out
}

/// The outcome of trying the JSON (exec) form.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Json {
    /// A JSON array of strings.
    Array(Vec<String>),
    /// Not a JSON array: the caller falls back to its shell form.
    Shell,
    /// A JSON array with a non-string element: a hard error in BuildKit.
    NotStrings,
}

pub(crate) fn parse_json_array(text: &str) -> Json {
    let t = text.trim_start();
    if !t.starts_with('[') {
        return Json::Shell;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(t) {
        Err(_) => Json::Shell,
        Ok(items) => {
            let strings: Option<Vec<String>> = items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Some(s),
                    _ => None,
                })
                .collect();
            strings.map_or(Json::NotStrings, Json::Array)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(w: Vec<Word>) -> Vec<String> {
        w.into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn shell_words_keep_quotes() {
        assert_eq!(
            texts(split_shell_words(r#"a="b c" d=e\ f 'g h'"#, '\\', 0)),
            vec![r#"a="b c""#, r"d=e\ f", "'g h'"]
        );
        assert_eq!(
            texts(split_shell_words(r#"x="" "#, '\\', 0)),
            vec![r#"x="""#]
        );
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            parse_json_array(r#" ["a", "b"]"#),
            Json::Array(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_json_array("['a']"), Json::Shell);
        assert_eq!(parse_json_array(r#"["a"] x"#), Json::Shell);
        assert_eq!(parse_json_array("[1]"), Json::NotStrings);
    }

    #[test]
    fn whitespace_split_offsets() {
        let w = split_whitespace(" a  bc\td", 10);
        assert_eq!(
            w[1],
            Word {
                text: "bc".into(),
                start: 14,
                end: 16
            }
        );
        assert_eq!(w.len(), 3);
    }
}
