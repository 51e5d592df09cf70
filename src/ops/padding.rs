//! Padding of the two spatial axes with `numpy.pad`'s `constant`, `reflect`
//! and `edge` modes.

use ndarray::{Array3, ArrayView3};

use super::PARALLEL_WORK;
use crate::error::{Error, Result};

/// How the border is filled, as `numpy.pad`'s `mode`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode<T> {
    /// Every border pixel is this value (`mode="constant"`).
    Constant(T),
    /// Mirror without repeating the edge pixel: `[a b c | b a]` (`mode="reflect"`).
    Reflect,
    /// Repeat the edge pixel: `[a b c | c c]` (`mode="edge"`).
    Edge,
}

/// Pixels added on each side of the two spatial axes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pad {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad {
    /// `d` pixels on every side.
    #[must_use]
    pub fn uniform(d: usize) -> Self {
        Pad {
            top: d,
            bottom: d,
            left: d,
            right: d,
        }
    }
}

/// Where pixel `i` of a padded axis (in `[-before, n + after)`, shifted by
/// `before`) reads from in an axis of length `n`; `None` means "the constant".
#[inline]
fn source_index<T>(i: usize, before: usize, n: usize, mode: &PadMode<T>) -> Option<usize> {
    let pos = i as isize - before as isize;
    let n_i = n as isize;
    if (0..n_i).contains(&pos) {
        return Some(pos as usize);
    }
    match mode {
        PadMode::Constant(_) => None,
        PadMode::Edge => Some(pos.clamp(0, n_i - 1) as usize),
        PadMode::Reflect if n == 1 => Some(0),
        PadMode::Reflect => {
            // numpy reflects repeatedly: the signal is periodic with 2(n - 1).
            let period = 2 * (n_i - 1);
            let m = pos.rem_euclid(period);
            Some(if m >= n_i { period - m } else { m } as usize)
        }
    }
}

/// Pads the spatial axes of an `(H, W, C)` image; the dtype is kept.
///
/// The results equal `numpy.pad(x, ((top, bottom), (left, right), (0, 0)), mode)`,
/// including `reflect` widths larger than the image (numpy reflects repeatedly).
///
/// # Errors
/// [`Error::InvalidArgument`] when the image is empty.
pub fn pad<T: Copy + Default + Send + Sync>(
    x: ArrayView3<T>,
    pad: Pad,
    mode: PadMode<T>,
) -> Result<Array3<T>> {
    let (h, w, c) = x.dim();
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::invalid(format!(
            "image must be non-empty, got shape {}",
            super::shape_str(x.shape())
        )));
    }
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout is contiguous");
    let grow = |n: usize, a: usize, b: usize| n.checked_add(a).and_then(|v| v.checked_add(b));
    let (Some(ho), Some(wo)) = (grow(h, pad.top, pad.bottom), grow(w, pad.left, pad.right)) else {
        return Err(Error::invalid(format!(
            "d is too large for an image of shape {}",
            super::shape_str(x.shape())
        )));
    };
    let row_in = w * c;
    super::check_result_size::<T>(&[ho, wo, c], "d")?;
    let row_out = wo * c;
    // Column map once: where each padded column reads from.
    let mut cols: Vec<Option<usize>> = Vec::new();
    cols.try_reserve_exact(wo)
        .map_err(|_| Error::OutOfMemory(format!("no memory for {wo} padded columns")))?;
    cols.extend((0..wo).map(|j| source_index(j, pad.left, w, &mode)));
    let fill = |i: usize, out_row: &mut [T]| {
        let Some(r) = source_index(i, pad.top, h, &mode) else {
            if let PadMode::Constant(v) = mode {
                out_row.fill(v);
            }
            return;
        };
        let in_row = &src[r * row_in..(r + 1) * row_in];
        out_row[pad.left * c..(pad.left + w) * c].copy_from_slice(in_row);
        for j in (0..pad.left).chain(pad.left + w..wo) {
            let dst = &mut out_row[j * c..(j + 1) * c];
            match cols[j] {
                Some(q) => dst.copy_from_slice(&in_row[q * c..(q + 1) * c]),
                None => {
                    if let PadMode::Constant(v) = mode {
                        dst.fill(v);
                    }
                }
            }
        }
    };
    let out = super::build_rows(
        ho,
        row_out,
        ho.saturating_mul(row_out) >= PARALLEL_WORK * 4,
        |first, chunk| {
            for (i, row) in (first..).zip(chunk.chunks_exact_mut(row_out)) {
                fill(i, row);
            }
        },
    )?;
    Ok(Array3::from_shape_vec((ho, wo, c), out).expect("shape matches length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Axis};

    fn pad2(x: ndarray::Array2<i32>, d: usize, mode: PadMode<i32>) -> ndarray::Array2<i32> {
        pad(x.view().insert_axis(Axis(2)), Pad::uniform(d), mode)
            .unwrap()
            .remove_axis(Axis(2))
    }

    #[test]
    fn constant_pads_with_the_value() {
        let out = pad2(array![[1, 2], [3, 4]], 1, PadMode::Constant(9));
        assert_eq!(
            out,
            array![[9, 9, 9, 9], [9, 1, 2, 9], [9, 3, 4, 9], [9, 9, 9, 9]]
        );
    }

    #[test]
    fn reflect_and_edge_match_numpy() {
        // np.pad([[1, 2, 3]], 2, mode="reflect") / "edge"
        let x = array![[1, 2, 3]];
        assert_eq!(
            pad2(x.clone(), 2, PadMode::Reflect).row(2).to_vec(),
            vec![3, 2, 1, 2, 3, 2, 1]
        );
        assert_eq!(
            pad2(x, 2, PadMode::Edge).row(0).to_vec(),
            vec![1, 1, 1, 2, 3, 3, 3]
        );
        // wider than the image: numpy reflects again
        let wide = pad2(array![[1, 2, 3]], 5, PadMode::Reflect);
        assert_eq!(
            wide.row(0).to_vec(),
            vec![2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3, 2]
        );
    }

    #[test]
    fn channels_are_kept_together() {
        let x = ndarray::Array3::from_shape_fn((2, 2, 3), |(i, j, k)| (i * 100 + j * 10 + k) as u8);
        let out = pad(x.view(), Pad::uniform(1), PadMode::Edge).unwrap();
        assert_eq!(out.dim(), (4, 4, 3));
        assert_eq!(out[[0, 0, 2]], 2);
        assert_eq!(out[[3, 3, 1]], 111);
    }

    #[test]
    fn empty_image_and_huge_padding_are_errors() {
        let x = ndarray::Array3::<f32>::zeros((0, 3, 1));
        assert!(pad(x.view(), Pad::uniform(1), PadMode::Constant(0.0)).is_err());
        let x = ndarray::Array3::<f32>::zeros((2, 3, 1));
        for d in [50_000, usize::MAX / 2] {
            let err = pad(x.view(), Pad::uniform(d), PadMode::Edge).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(ref m) if m.contains('d')),
                "{err}"
            );
        }
    }
}
