//! The simulation's field: a slab of rows of the global `ny x nx` grid, explicit 5-point
//! stencil, fixed boundaries (top edge hot at 1.0, other edges 0.0, a hot disc at the start).

use std::sync::Arc;

/// Diffusion coefficient times dt/dx^2 (stable below 0.25).
pub const ALPHA: f64 = 0.2;

/// Rows `[row0, row1)` of the global grid owned by `rank` of `ranks`.
pub fn bounds(ny: usize, rank: usize, ranks: usize) -> (usize, usize) {
    (rank * ny / ranks, (rank + 1) * ny / ranks)
}

/// Initial value at global cell (row, col): a hot disc centred in the grid.
pub fn initial(ny: usize, nx: usize, row: usize, col: usize) -> f64 {
    let (cy, cx) = (ny as f64 / 2.0, nx as f64 / 2.0);
    let r = (ny.min(nx) as f64) / 5.0;
    let (dy, dx) = (row as f64 + 0.5 - cy, col as f64 + 0.5 - cx);
    if dy * dy + dx * dx <= r * r {
        1.0
    } else {
        0.0
    }
}

/// Value of the row just above the grid (the hot top edge) and below it.
pub const TOP_EDGE: f64 = 1.0;
/// Value of the row below the grid and of the left and right edges.
pub const COLD_EDGE: f64 = 0.0;

/// The slab's buffer as bytes shared with the driver: the `Arc` lets the simulation know when
/// no pushed event still reads it (`Arc::get_mut` succeeds again).
#[derive(Clone)]
pub struct SlabBytes(pub Arc<Vec<f64>>);

impl AsRef<[u8]> for SlabBytes {
    fn as_ref(&self) -> &[u8] {
        let v: &[f64] = &self.0;
        // SAFETY: f64 has no padding and every byte pattern is a valid u8; the pointer and
        // length cover exactly the vector's initialised elements, and the returned slice
        // borrows `self`, which keeps the (immutable, shared) vector alive.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
    }
}

/// One step: `next = cur + ALPHA * laplacian(cur)`, with `above`/`below` the halo rows
/// (the neighbours' edge rows, or the fixed boundary).
pub fn step(cur: &[f64], above: &[f64], below: &[f64], nx: usize, next: &mut [f64]) {
    let rows = cur.len() / nx;
    for r in 0..rows {
        let up = if r == 0 {
            above
        } else {
            &cur[(r - 1) * nx..r * nx]
        };
        let down = if r + 1 == rows {
            below
        } else {
            &cur[(r + 1) * nx..(r + 2) * nx]
        };
        let row = &cur[r * nx..(r + 1) * nx];
        for c in 0..nx {
            let left = if c == 0 { COLD_EDGE } else { row[c - 1] };
            let right = if c + 1 == nx { COLD_EDGE } else { row[c + 1] };
            next[r * nx + c] = row[c] + ALPHA * (up[c] + down[c] + left + right - 4.0 * row[c]);
        }
    }
}

/// (min, max, sum) of values.
pub fn stats(values: &[f64]) -> (f64, f64, f64) {
    values.iter().fold(
        (f64::INFINITY, f64::NEG_INFINITY, 0.0),
        |(lo, hi, s), &v| (lo.min(v), hi.max(v), s + v),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cover_the_grid_without_overlap() {
        for ranks in 1..7 {
            let mut next = 0;
            for r in 0..ranks {
                let (a, b) = bounds(37, r, ranks);
                assert_eq!(a, next);
                next = b;
            }
            assert_eq!(next, 37);
        }
    }

    #[test]
    fn a_split_grid_steps_like_the_whole_grid() {
        let (ny, nx) = (8, 5);
        let whole: Vec<f64> = (0..ny * nx)
            .map(|i| initial(ny, nx, i / nx, i % nx))
            .collect();
        let mut out = vec![0.0; ny * nx];
        step(&whole, &[TOP_EDGE; 5], &[COLD_EDGE; 5], nx, &mut out);
        let (top, bot) = whole.split_at(3 * nx);
        let mut a = vec![0.0; 3 * nx];
        let mut b = vec![0.0; 5 * nx];
        step(top, &[TOP_EDGE; 5], &bot[..nx], nx, &mut a);
        step(bot, &top[2 * nx..], &[COLD_EDGE; 5], nx, &mut b);
        a.extend_from_slice(&b);
        assert_eq!(a, out);
    }
}
