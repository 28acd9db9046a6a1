//! [`DataDescriptor`]: where an event's data lives, and which part of it a consumer wants.
//!
//! A descriptor carries an opaque, driver-defined `location` and the total `size` of the stored
//! data, plus a *selection*: an ordered list of [`Segment`]s of the original bytes. Views compose:
//! a sub-view of a strided view selects a range of the bytes the strided view selected.

use bytes::Bytes;

use crate::error::{Error, Result};

/// A byte range `[offset, offset + len)` of the original data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset in the original data.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Describes an event's stored data and a selection of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDescriptor {
    location: Bytes,
    total: u64,
    selection: Vec<Segment>,
    /// Sum of the selection's lengths.
    selected: u64,
}

/// Where the previous mapped range ended: lets increasing ranges (strided views) resume the walk
/// over the selection instead of restarting it, so building a view is linear.
#[derive(Default)]
struct Cursor {
    /// Index of the segment the walk is in.
    segment: usize,
    /// Position, in the view's bytes, where that segment starts.
    start: u64,
}

impl DataDescriptor {
    /// A descriptor selecting all `size` bytes at `location` (driver-defined).
    pub fn new(location: Bytes, size: u64) -> Self {
        let selection = if size == 0 {
            Vec::new()
        } else {
            vec![Segment {
                offset: 0,
                len: size,
            }]
        };
        DataDescriptor {
            location,
            total: size,
            selection,
            selected: size,
        }
    }

    /// A descriptor selecting nothing: a selector returning it skips the data.
    pub fn null() -> Self {
        DataDescriptor {
            location: Bytes::new(),
            total: 0,
            selection: Vec::new(),
            selected: 0,
        }
    }

    /// The driver-defined location of the data.
    pub fn location(&self) -> &Bytes {
        &self.location
    }

    /// Size of the whole stored data.
    pub fn total_size(&self) -> u64 {
        self.total
    }

    /// Number of selected bytes.
    pub fn size(&self) -> u64 {
        self.selected
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.selection.is_empty()
    }

    /// The selected ranges of the original data, in the order their bytes are delivered.
    pub fn flatten(&self) -> &[Segment] {
        &self.selection
    }

    /// Selects `len` bytes starting at `offset` of this view.
    pub fn sub_view(&self, offset: u64, len: u64) -> Result<Self> {
        let mut selection = Vec::new();
        self.map_range(offset, len, &mut Cursor::default(), &mut selection)?;
        Ok(self.with_selection(selection))
    }

    /// Selects `num_blocks` blocks of `block_size` bytes, starting at `offset` of this view and
    /// separated by `gap_size` skipped bytes.
    pub fn strided_view(
        &self,
        offset: u64,
        num_blocks: u64,
        block_size: u64,
        gap_size: u64,
    ) -> Result<Self> {
        let stride = block_size
            .checked_add(gap_size)
            .ok_or_else(|| Error::InvalidSelection("stride overflows".into()))?;
        let mut selection = Vec::new();
        let mut cursor = Cursor::default();
        for i in 0..num_blocks {
            let start = i
                .checked_mul(stride)
                .and_then(|x| x.checked_add(offset))
                .ok_or_else(|| Error::InvalidSelection("strided view overflows".into()))?;
            self.map_range(start, block_size, &mut cursor, &mut selection)?;
        }
        Ok(self.with_selection(selection))
    }

    /// Selects an arbitrary list of `(offset, len)` ranges of this view, in the given order.
    pub fn unstructured_view(&self, ranges: &[(u64, u64)]) -> Result<Self> {
        let mut selection = Vec::new();
        let mut cursor = Cursor::default();
        for &(offset, len) in ranges {
            self.map_range(offset, len, &mut cursor, &mut selection)?;
        }
        Ok(self.with_selection(selection))
    }

    fn with_selection(&self, selection: Vec<Segment>) -> Self {
        DataDescriptor {
            location: self.location.clone(),
            total: self.total,
            selected: selection.iter().map(|s| s.len).sum(),
            selection,
        }
    }

    /// Appends the original-data segments covering `[offset, offset+len)` of this view.
    /// `cursor` remembers where the previous range ended; ranges before it restart the walk.
    fn map_range(
        &self,
        offset: u64,
        len: u64,
        cursor: &mut Cursor,
        out: &mut Vec<Segment>,
    ) -> Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::InvalidSelection("range overflows".into()))?;
        if end > self.selected {
            return Err(Error::InvalidSelection(format!(
                "range [{offset}, {end}) exceeds the {} selected bytes",
                self.selected
            )));
        }
        if offset < cursor.start {
            *cursor = Cursor::default();
        }
        let mut pos = offset;
        while pos < end {
            let seg = self.selection[cursor.segment];
            let seg_end = cursor.start + seg.len;
            if pos >= seg_end {
                cursor.start = seg_end;
                cursor.segment += 1;
                continue;
            }
            let take = (seg_end - pos).min(end - pos);
            push_merged(
                out,
                Segment {
                    offset: seg.offset + (pos - cursor.start),
                    len: take,
                },
            );
            pos += take;
        }
        Ok(())
    }
}

fn push_merged(out: &mut Vec<Segment>, s: Segment) {
    if s.len == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.offset + last.len == s.offset {
            last.len += s.len;
            return;
        }
    }
    out.push(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(size: u64) -> DataDescriptor {
        DataDescriptor::new(Bytes::from_static(b"loc"), size)
    }

    #[test]
    fn sub_view_selects_range() {
        let v = d(100).sub_view(10, 20).expect("fits");
        assert_eq!(
            v.flatten(),
            &[Segment {
                offset: 10,
                len: 20
            }]
        );
        assert_eq!(v.size(), 20);
    }

    #[test]
    fn strided_view_then_sub_view_composes() {
        // blocks [0,4) [10,14) [20,24)
        let s = d(100).strided_view(0, 3, 4, 6).expect("fits");
        assert_eq!(s.size(), 12);
        // bytes 2..8 of the strided view = original [2,4) + [10,14)
        let sub = s.sub_view(2, 6).expect("fits");
        assert_eq!(
            sub.flatten(),
            &[
                Segment { offset: 2, len: 2 },
                Segment { offset: 10, len: 4 }
            ]
        );
    }

    #[test]
    fn out_of_range_selection_is_an_error() {
        assert!(d(10).sub_view(5, 6).is_err());
        assert!(d(10).strided_view(0, 3, 4, 0).is_err());
        assert!(d(10).sub_view(u64::MAX, 2).is_err());
    }

    #[test]
    fn unordered_ranges_restart_the_walk() {
        let s = d(100).strided_view(0, 4, 10, 10).expect("fits"); // [0,10) [20,30) [40,50) [60,70)
        let v = s
            .unstructured_view(&[(35, 2), (5, 10), (39, 1)])
            .expect("fits");
        assert_eq!(
            v.flatten(),
            &[
                Segment { offset: 65, len: 2 },
                Segment { offset: 5, len: 5 },
                Segment { offset: 20, len: 5 },
                Segment { offset: 69, len: 1 },
            ]
        );
        assert_eq!(v.size(), 13);
    }

    #[test]
    fn location_is_kept_by_every_view() {
        let base = DataDescriptor::new(Bytes::from_static(b"where-it-is"), 100);
        assert_eq!(base.location().as_ref(), b"where-it-is");
        let views = [
            base.sub_view(3, 4).expect("fits"),
            base.strided_view(0, 2, 5, 5).expect("fits"),
            base.unstructured_view(&[(9, 1), (0, 2)]).expect("fits"),
            base.sub_view(0, 0).expect("fits"),
        ];
        for v in &views {
            assert_eq!(v.location(), base.location(), "{v:?}");
            assert_eq!(v.total_size(), 100);
        }
        assert!(DataDescriptor::null().location().is_empty());
    }

    #[test]
    fn is_empty_means_nothing_selected() {
        assert!(DataDescriptor::null().is_empty());
        assert!(DataDescriptor::new(Bytes::from_static(b"l"), 0).is_empty());
        let full = d(10);
        assert!(!full.is_empty());
        assert!(full.sub_view(4, 0).expect("fits").is_empty());
        assert!(full.strided_view(0, 0, 4, 1).expect("fits").is_empty());
        assert!(full.unstructured_view(&[]).expect("fits").is_empty());
        assert!(!full.sub_view(9, 1).expect("fits").is_empty());
        assert!(!full
            .unstructured_view(&[(0, 0), (2, 1)])
            .expect("fits")
            .is_empty());
    }

    #[test]
    fn adjacent_ranges_merge() {
        let v = d(10).unstructured_view(&[(0, 2), (2, 3)]).expect("fits");
        assert_eq!(v.flatten(), &[Segment { offset: 0, len: 5 }]);
    }
}
