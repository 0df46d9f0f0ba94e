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

/// One stretch of a logical line that is contiguous in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    /// Byte offset in the logical text where the segment starts.
    offset: usize,
    /// Source position of that byte.
    pos: Pos,
    /// All ASCII: a column is a byte count, found in O(1).
    ascii: bool,
}

/// Maps byte offsets of a logical line (an instruction after continuation lines were joined and
/// comment lines dropped) back to physical line:column positions.
///
/// Lookups are O(1) in ASCII segments; in others a cursor remembers the last answer, so locating
/// the arguments of a line in order costs one pass over it, never one pass per argument.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMap {
    /// The first segment, held inline: most instructions are one line and need no allocation.
    first: Option<Segment>,
    /// Further segments (continuation lines), ascending by offset.
    more: Vec<Segment>,
    text_len: usize,
    /// (segment start offset, byte offset, chars from the segment start to it).
    cursor: std::cell::Cell<(usize, usize, usize)>,
}

impl SourceMap {
    /// Adds a segment whose text is `segment`, starting at byte `offset` of the logical line.
    pub(crate) fn push(&mut self, offset: usize, pos: Pos, segment: &str) {
        let seg = Segment {
            offset,
            pos,
            ascii: segment.is_ascii(),
        };
        if self.first.is_none() {
            self.first = Some(seg);
        } else {
            self.more.push(seg);
        }
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.text_len = len;
    }

    fn segment_at(&self, offset: usize) -> Option<Segment> {
        let idx = self.more.partition_point(|s| s.offset <= offset);
        match idx.checked_sub(1) {
            Some(i) => self.more.get(i).copied(),
            None => self.first.filter(|s| s.offset <= offset),
        }
    }

    /// The physical position of byte `offset` of `text` (the logical line this map was built for).
    pub fn locate(&self, text: &str, offset: usize) -> Pos {
        let offset = offset.min(text.len());
        let Some(seg) = self.segment_at(offset) else {
            return Pos::new(1, 1);
        };
        let chars = if seg.ascii {
            offset - seg.offset
        } else {
            let (c_seg, c_off, c_chars) = self.cursor.get();
            let (from, base) = if c_seg == seg.offset && c_off <= offset && c_off >= seg.offset {
                (c_off, c_chars)
            } else {
                (seg.offset, 0)
            };
            let n = base + text.get(from..offset).map_or(0, |s| s.chars().count());
            self.cursor.set((seg.offset, offset, n));
            n
        };
        Pos::new(seg.pos.line(), seg.pos.col() + chars)
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
        let first = self.segment_at(off);
        out.push(0, self.locate(text, off), "");
        if let (Some(f), Some(seg)) = (out.first.as_mut(), first) {
            f.ascii = seg.ascii;
        }
        for seg in self.first.iter().chain(&self.more) {
            if seg.offset > off {
                out.more.push(Segment {
                    offset: seg.offset - off,
                    ..*seg
                });
            }
        }
        out.set_len(text.len().saturating_sub(off));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cursor must never change an answer: any order of lookups gives the direct count.
    #[test]
    fn locate_is_exact_in_any_order() {
        let seg1 = "LABEL a=\"é\" b=ü ";
        let seg2 = "c=ñ d=x";
        let text = format!("{seg1}{seg2}");
        let mut map = SourceMap::default();
        map.push(0, Pos::new(3, 5), seg1);
        map.push(seg1.len(), Pos::new(4, 1), seg2);
        map.set_len(text.len());
        let direct = |off: usize| {
            if off < seg1.len() {
                Pos::new(3, 5 + text[..off].chars().count())
            } else {
                Pos::new(4, 1 + text[seg1.len()..off].chars().count())
            }
        };
        let offsets: Vec<usize> = (0..=text.len())
            .filter(|o| text.is_char_boundary(*o))
            .collect();
        for &o in offsets
            .iter()
            .chain(offsets.iter().rev())
            .chain(offsets.iter().step_by(3))
        {
            assert_eq!(map.locate(&text, o), direct(o), "offset {o}");
        }
    }
}
