//! Source positions: every AST node, instruction and error carries a line:column span.
//!
//! Lines and columns are 1-based; columns count characters (not bytes), as editors show them.

use serde::Serialize;

/// A position in the Dockerfile text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// Positions are stored as `u32` (half the memory per span); a file of more than 4 billion
    /// lines or columns is not a Dockerfile, and saturates instead of wrapping.
    pub fn new(line: usize, col: usize) -> Self {
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Pos {
            line: clamp(line),
            col: clamp(col),
        }
    }

    pub fn line(&self) -> usize {
        self.line as usize
    }

    pub fn col(&self) -> usize {
        self.col as usize
    }
}

/// A range in the Dockerfile text; `end` is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    pub fn new(start: Pos, end: Pos) -> Self {
        Span { start, end }
    }

    /// A span covering a whole line (column 1 to the end is unknown: zero-width at col 1).
    pub fn line(line: usize) -> Self {
        Span::new(Pos::new(line, 1), Pos::new(line, 1))
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Maps byte offsets of a logical line (an instruction after continuation lines were joined and
/// comment lines dropped) back to physical line:column positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMap {
    /// The first segment, held inline: most instructions are one line and need no allocation.
    first: Option<(usize, Pos)>,
    /// Further segments (continuation lines): (byte offset in the logical text, physical
    /// position of that byte), ascending by offset.
    more: Vec<(usize, Pos)>,
    text_len: usize,
}

impl SourceMap {
    pub(crate) fn push(&mut self, offset: usize, pos: Pos) {
        if self.first.is_none() {
            self.first = Some((offset, pos));
        } else {
            self.more.push((offset, pos));
        }
    }

    fn segment_at(&self, offset: usize) -> Option<(usize, Pos)> {
        let idx = self.more.partition_point(|(o, _)| *o <= offset);
        match idx.checked_sub(1) {
            Some(i) => self.more.get(i).copied(),
            None => self.first.filter(|(o, _)| *o <= offset),
        }
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.text_len = len;
    }

    /// The physical position of byte `offset` of `text` (the logical line this map was built for).
    pub fn locate(&self, text: &str, offset: usize) -> Pos {
        let offset = offset.min(text.len());
        let Some((seg_off, seg_pos)) = self.segment_at(offset) else {
            return Pos::new(1, 1);
        };
        let chars = text
            .get(seg_off..offset)
            .map(|s| {
                if s.is_ascii() {
                    s.len()
                } else {
                    s.chars().count()
                }
            })
            .unwrap_or(0);
        Pos::new(seg_pos.line(), seg_pos.col() + chars)
    }

    /// The span of bytes `start..end` of `text`.
    pub fn span(&self, text: &str, start: usize, end: usize) -> Span {
        Span::new(self.locate(text, start), self.locate(text, end))
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none() || self.text_len == 0
    }
}

impl SourceMap {
    /// The map of `text[off..]`, for a sub-instruction such as an ONBUILD trigger.
    pub(crate) fn shifted(&self, text: &str, off: usize) -> SourceMap {
        let mut out = SourceMap::default();
        out.push(0, self.locate(text, off));
        for &(o, p) in self.first.iter().chain(&self.more) {
            if o > off {
                out.push(o - off, p);
            }
        }
        out.set_len(text.len().saturating_sub(off));
        out
    }
}
