//! Splitting a byte stream into lines with a bounded buffer (pure: no I/O).

/// Longest line kept, in bytes (without its newline); longer lines are reported and skipped.
pub const MAX_LINE: usize = 1 << 20;

/// What [`LineSplitter::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Line(&'a [u8]),
    /// A line longer than the limit was skipped; its length so far (at least the limit).
    TooLong(usize),
}

/// Accumulates bytes and hands out complete lines; never holds more than the limit.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// Bytes of an over-long line skipped so far (its end not yet seen).
    skipping: Option<usize>,
}

impl LineSplitter {
    /// A splitter that keeps lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max,
            skipping: None,
        }
    }

    /// Feeds bytes, calling `emit` for each complete line (or skipped over-long line).
    pub fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(Piece<'_>)) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|b| *b == b'\n');
            let (chunk, end) = match newline {
                Some(i) => (&bytes[..i], true),
                None => (bytes, false),
            };
            bytes = match newline {
                Some(i) => &bytes[i + 1..],
                None => &[],
            };
            if let Some(skipped) = &mut self.skipping {
                *skipped += chunk.len();
                if end {
                    emit(Piece::TooLong(*skipped));
                    self.skipping = None;
                }
                continue;
            }
            if self.buf.len() + chunk.len() > self.max {
                self.skipping = Some(self.buf.len() + chunk.len());
                self.buf.clear();
                if end {
                    emit(Piece::TooLong(self.skipping.take().unwrap_or_default()));
                }
                continue;
            }
            if !end {
                self.buf.extend_from_slice(chunk);
                continue;
            }
            if self.buf.is_empty() {
                emit(Piece::Line(strip_cr(chunk)));
            } else {
                self.buf.extend_from_slice(chunk);
                emit(Piece::Line(strip_cr(&self.buf)));
                self.buf.clear();
            }
        }
    }

    /// The unterminated last line, if any (at end of input or shutdown).
    pub fn finish(&mut self, mut emit: impl FnMut(Piece<'_>)) {
        if let Some(skipped) = self.skipping.take() {
            emit(Piece::TooLong(skipped));
        } else if !self.buf.is_empty() {
            emit(Piece::Line(strip_cr(&self.buf)));
        }
        self.buf.clear();
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        Line(Vec<u8>),
        TooLong(usize),
    }

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Out> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut push = |p: Piece<'_>| {
            out.push(match p {
                Piece::Line(l) => Out::Line(l.to_vec()),
                Piece::TooLong(n) => Out::TooLong(n),
            })
        };
        for c in chunks {
            s.feed(c, &mut push);
        }
        s.finish(&mut push);
        out
    }

    #[test]
    fn lines_across_chunks_and_over_long_lines() {
        assert_eq!(
            split(8, &[b"ab", b"c\nd\r\n\n", b"0123456789", b"x\nok"]),
            [
                Out::Line(b"abc".to_vec()),
                Out::Line(b"d".to_vec()),
                Out::Line(b"".to_vec()),
                Out::TooLong(11),
                Out::Line(b"ok".to_vec()),
            ]
        );
        assert_eq!(split(3, &[b"abcd\n"]), [Out::TooLong(4)]);
        assert_eq!(split(3, &[b"abc\n"]), [Out::Line(b"abc".to_vec())]);
        assert_eq!(split(3, &[b"abcdef"]), [Out::TooLong(6)]);
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_lines(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'\r'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..10),
            max in 1usize..40,
        ) {
            let whole = split(max, &[&text]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for c in cuts {
                chunks.push(&text[start..c]);
                start = c;
            }
            chunks.push(&text[start..]);
            prop_assert_eq!(split(max, &chunks), whole);
        }
    }
}
