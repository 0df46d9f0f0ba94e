//! Extraction of leading `--flag[=value]` words from an instruction's arguments (BuildKit
//! `extractBuilderFlags`): quotes inside a flag are removed, `--` ends the flags.

use super::words::Word;

/// Returns the flag words (quotes removed) with their byte ranges and the offset where the
/// remaining arguments start, all relative to `base`.
pub(crate) fn extract_flags(line: &str, base: usize) -> (Vec<Word>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    // Fast path: most instructions have no flags, so nothing is allocated for them.
    let trimmed = line.trim_start();
    if !trimmed.starts_with("--") {
        return (Vec::new(), base + line.len() - trimmed.len());
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let Some(&(pos, ch)) = chars.get(i) else {
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                flags.push(Word {
                    text: word,
                    start: base + start,
                    end: base + line.len(),
                });
            }
            return (flags, base + line.len());
        };
        match phase {
            Phase::Spaces => {
                if ch.is_whitespace() {
                    i += 1;
                    continue;
                }
                if ch != '-' || chars.get(i + 1).map(|c| c.1) != Some('-') {
                    return (flags, base + pos);
                }
                phase = Phase::Word;
                start = pos;
            }
            Phase::Word => {
                if ch.is_whitespace() {
                    if word == "--" {
                        return (flags, base + pos);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push(Word {
                            text: std::mem::take(&mut word),
                            start: base + start,
                            end: base + pos,
                        });
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
                    i += 1;
                    continue;
                }
                if ch == '\\' {
                    if i + 1 == chars.len() {
                        i += 1;
                        continue;
                    }
                    i += 1;
                }
                word.push(chars[i].1);
                i += 1;
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    i += 1;
                    continue;
                }
                if ch == '\\' {
                    if i + 1 == chars.len() {
                        phase = Phase::Word;
                        i += 1;
                        continue;
                    }
                    i += 1;
                }
                word.push(chars[i].1);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_then_args() {
        let line = r#"--mount="type=cache,target=/a b" --network=none echo hi"#;
        let (flags, off) = extract_flags(line, 0);
        let t: Vec<_> = flags.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(t, vec!["--mount=type=cache,target=/a b", "--network=none"]);
        assert_eq!(&line[off..], "echo hi");
    }

    #[test]
    fn double_dash_ends_flags() {
        let line = "--link -- --not-a-flag x";
        let (flags, off) = extract_flags(line, 0);
        assert_eq!(flags.len(), 1);
        assert_eq!(line[off..].trim(), "--not-a-flag x");
    }
}
