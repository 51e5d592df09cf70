//! Max and average pooling over `p × p` windows, channel by channel.

use std::mem::MaybeUninit;

use ndarray::{Array3, ArrayView3};

use super::simd::{multiversion, Isa};
use super::{shape_str, AvgElem, Pixel, PARALLEL_WORK};
use crate::error::{Error, Result};

/// Pooling does so little per element that splitting a 512×512 image over
/// threads costs more in wake-ups than it saves; it goes parallel from about
/// 1024×1024 up.
const POOL_PARALLEL_WORK: usize = PARALLEL_WORK * 8;

/// Window size and stride of a pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolParams {
    /// The window is `size × size` (≥ 1, at most the image's height and width).
    pub size: usize,
    /// Step between windows along both axes (≥ 1).
    pub stride: usize,
}

/// Everything a row kernel reads; shared by all threads.
pub(crate) struct PoolCtx<'a, T> {
    /// The image, `(H, W, C)` contiguous.
    src: &'a [T],
    c: usize,
    /// Elements per image row: `W * C`.
    row_len: usize,
    size: usize,
    stride: usize,
    wo: usize,
}

impl<T> PoolCtx<'_, T> {
    #[inline(always)]
    fn row(&self, r: usize) -> &[T] {
        &self.src[r * self.row_len..(r + 1) * self.row_len]
    }
}

/// One output row of a pooling, windows starting at input row `r0`, for
/// both kinds: each value is `load`ed (itself for max, the average type for
/// average) and the window reduced with `op` (max or `+`), down the rows
/// first (one contiguous pass per row into `tmp`), then across columns into
/// `orow` (the 2×2 stride-1 windows have their own paths).
#[inline(always)]
fn reduce_row<T: Pixel, A: Copy>(
    ctx: &PoolCtx<'_, T>,
    r0: usize,
    tmp: &mut Vec<A>,
    orow: &mut [A],
    load: impl Fn(T) -> A,
    op: impl Fn(A, A) -> A,
) {
    let (c, s, p) = (ctx.c, ctx.stride, ctx.size);
    let width = orow.len();
    tmp.clear();
    tmp.extend(ctx.row(r0).iter().map(|&x| load(x)));
    for di in 1..p {
        for (t, &x) in tmp.iter_mut().zip(ctx.row(r0 + di)) {
            *t = op(*t, load(x));
        }
    }
    if s == 1 {
        orow.copy_from_slice(&tmp[..width]);
        for dj in 1..p {
            for (o, &t) in orow.iter_mut().zip(&tmp[dj * c..]) {
                *o = op(*o, t);
            }
        }
    } else {
        for j in 0..ctx.wo {
            for ch in 0..c {
                let mut m = tmp[j * s * c + ch];
                for dj in 1..p {
                    m = op(m, tmp[(j * s + dj) * c + ch]);
                }
                orow[j * c + ch] = m;
            }
        }
    }
}

fn any_nan<T: Pixel>(xs: &[T]) -> bool {
    xs.iter().fold(false, |n, v| n | v.is_nan())
}

/// One output row of a max pooling ([`reduce_row`]). With `EXACT` every
/// comparison propagates NaN like `numpy.max`; without it the row uses one
/// `max` instruction per comparison and returns whether the window rows hold
/// a NaN, so the caller can redo the row exactly.
#[inline(always)]
fn max_row<T: Pixel, const EXACT: bool>(
    ctx: &PoolCtx<'_, T>,
    r0: usize,
    tmp: &mut Vec<T>,
    orow: &mut [T],
) -> bool {
    let nan = !EXACT && (r0..r0 + ctx.size).any(|r| any_nan(ctx.row(r)));
    let mx = |a: T, b: T| if EXACT { a.max_nan(b) } else { a.fast_max(b) };
    reduce_row(ctx, r0, tmp, orow, |x| x, mx);
    nan
}

/// Output rows `first, first + 1, …` of a max pooling; NaN propagates like
/// `numpy.max` (a row holding a NaN is redone with NaN-aware comparisons).
#[inline(always)]
fn max_body<T: Pixel, const FMA: bool>(ctx: &PoolCtx<'_, T>, first: usize, out: &mut [T]) {
    let mut tmp: Vec<T> = Vec::new();
    for (i, orow) in (first..).zip(out.chunks_exact_mut(ctx.wo * ctx.c)) {
        if max_row::<T, false>(ctx, i * ctx.stride, &mut tmp, orow) {
            max_row::<T, true>(ctx, i * ctx.stride, &mut tmp, orow);
        }
    }
}

/// `out[k]` = the 2×2 window at output column `lo + k` of rows `a`, `b` (one
/// element per channel), for both kinds: `finish(op(op(a0, b0), op(a1, b1)))`
/// of the `load`ed values (max: itself, `max`, itself; average: the average
/// type, `+`, divide by 4).
#[inline(always)]
fn window_2x2<T: Pixel, A: Copy>(
    a: &[T],
    b: &[T],
    c: usize,
    out: &mut [MaybeUninit<A>],
    load: impl Fn(T) -> A,
    op: impl Fn(A, A) -> A,
    finish: impl Fn(A) -> A,
) {
    let n = out.len();
    let (a0, a1) = (&a[..n], &a[c..c + n]);
    let (b0, b1) = (&b[..n], &b[c..c + n]);
    for (q, o) in out.iter_mut().enumerate() {
        let left = op(load(a0[q]), load(b0[q]));
        let right = op(load(a1[q]), load(b1[q]));
        o.write(finish(op(left, right)));
    }
}

/// [`window_2x2`] for max; with `EXACT` NaN propagates like `numpy.max`.
#[inline(always)]
fn max_2x2_row<T: Pixel, const EXACT: bool>(
    a: &[T],
    b: &[T],
    c: usize,
    out: &mut [MaybeUninit<T>],
) {
    let mx = |a: T, b: T| if EXACT { a.max_nan(b) } else { a.fast_max(b) };
    window_2x2(a, b, c, out, |x| x, mx, |v| v);
}

/// Output rows `first, first + 1, …` of the 2×2 stride-1 max pooling, written
/// without zeroing first (every element is written). A row whose windows hold
/// a NaN is redone exactly.
#[inline(always)]
fn max_2x2_body<T: Pixel, const FMA: bool>(
    ctx: &PoolCtx<'_, T>,
    first: usize,
    out: &mut [MaybeUninit<T>],
) {
    let c = ctx.c;
    let width = ctx.wo * c;
    let mut pairs = out.chunks_exact_mut(2 * width);
    let mut i = first;
    for pair in &mut pairs {
        let (o0, o1) = pair.split_at_mut(width);
        let (a, b, d) = (ctx.row(i), ctx.row(i + 1), ctx.row(i + 2));
        if max_2x2_pair::<T>(a, b, d, c, o0, o1)
            || any_nan(&a[width..])
            || any_nan(&b[width..])
            || any_nan(&d[width..])
        {
            max_2x2_row::<T, true>(a, b, c, o0);
            max_2x2_row::<T, true>(b, d, c, o1);
        }
        i += 2;
    }
    let orow = pairs.into_remainder();
    if !orow.is_empty() {
        let (a, b) = (ctx.row(i), ctx.row(i + 1));
        if any_nan(a) || any_nan(b) {
            max_2x2_row::<T, true>(a, b, c, orow);
        } else {
            max_2x2_row::<T, false>(a, b, c, orow);
        }
    }
}

/// Two output rows of the 2×2 max pooling from input rows `a`, `b`, `d`: each
/// loaded element of `b` serves both. One `max` per comparison; the result
/// says whether the left columns of the three rows held a NaN.
#[inline(always)]
fn max_2x2_pair<T: Pixel>(
    a: &[T],
    b: &[T],
    d: &[T],
    c: usize,
    o0: &mut [MaybeUninit<T>],
    o1: &mut [MaybeUninit<T>],
) -> bool {
    let n = o0.len();
    let (a0, a1) = (&a[..n], &a[c..c + n]);
    let (b0, b1) = (&b[..n], &b[c..c + n]);
    let (d0, d1) = (&d[..n], &d[c..c + n]);
    let o1 = &mut o1[..n];
    let mut nan = false;
    for q in 0..n {
        let (x0, y0, z0) = (a0[q], b0[q], d0[q]);
        let (x1, y1, z1) = (a1[q], b1[q], d1[q]);
        o0[q].write(x0.fast_max(y0).fast_max(x1.fast_max(y1)));
        o1[q].write(y0.fast_max(z0).fast_max(y1.fast_max(z1)));
        nan |= x0.is_nan() | y0.is_nan() | z0.is_nan();
    }
    nan
}

/// Output rows of an average pooling, in the same order of additions as the
/// fused 2×2 path ([`avg_2x2_body`]). Integers are averaged in `f64`.
#[inline(always)]
fn avg_body<T: Pixel, const FMA: bool>(ctx: &PoolCtx<'_, T>, first: usize, out: &mut [T::Avg]) {
    let width = ctx.wo * ctx.c;
    let count = T::Avg::from_count(ctx.size * ctx.size);
    let mut tmp: Vec<T::Avg> = Vec::new();
    for (i, orow) in (first..).zip(out.chunks_exact_mut(width)) {
        reduce_row(ctx, i * ctx.stride, &mut tmp, orow, T::to_avg, |x, y| x + y);
        for o in orow.iter_mut() {
            *o = *o / count;
        }
    }
}

multiversion!(fn max_rows<T: Pixel>(ctx: &PoolCtx<'_, T>, first: usize, out: &mut [T]) => max_body);
multiversion!(fn max_2x2_rows<T: Pixel>(ctx: &PoolCtx<'_, T>, first: usize, out: &mut [MaybeUninit<T>]) => max_2x2_body);
/// Output rows of the 2×2 stride-1 average pooling, written without zeroing
/// first; the additions are those of [`avg_body`]'s fused path.
#[inline(always)]
fn avg_2x2_body<T: Pixel, const FMA: bool>(
    ctx: &PoolCtx<'_, T>,
    first: usize,
    out: &mut [MaybeUninit<T::Avg>],
) {
    let count = T::Avg::from_count(4);
    for (i, orow) in (first..).zip(out.chunks_exact_mut(ctx.wo * ctx.c)) {
        let (a, b) = (ctx.row(i), ctx.row(i + 1));
        window_2x2(a, b, ctx.c, orow, T::to_avg, |x, y| x + y, |v| v / count);
    }
}

multiversion!(fn avg_2x2_rows<T: Pixel>(ctx: &PoolCtx<'_, T>, first: usize, out: &mut [MaybeUninit<T::Avg>]) => avg_2x2_body);
multiversion!(fn avg_rows<T: Pixel>(ctx: &PoolCtx<'_, T>, first: usize, out: &mut [T::Avg]) => avg_body);

/// Checks the arguments and returns the output size `(ho, wo)`.
fn check(x: &ArrayView3<'_, impl Pixel>, p: &PoolParams) -> Result<(usize, usize)> {
    let (h, w, c) = x.dim();
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::invalid(format!(
            "image must be non-empty, got shape {}",
            shape_str(x.shape())
        )));
    }
    if p.size == 0 || p.size > h.min(w) {
        return Err(Error::invalid(format!(
            "p must be between 1 and the image's smaller side {} (H={h}, W={w}), got {}",
            h.min(w),
            p.size
        )));
    }
    if p.stride == 0 {
        return Err(Error::invalid("stride must be >= 1, got 0"));
    }
    Ok(((h - p.size) / p.stride + 1, (w - p.size) / p.stride + 1))
}

/// Max pooling of an `(H, W, C)` image: `(H', W', C)` with
/// `H' = (H - size) // stride + 1`; the dtype is kept and NaN propagates.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty image, `size` outside
/// `1..=min(H, W)` or `stride == 0`.
pub fn max_pool<T: Pixel>(x: ArrayView3<T>, p: &PoolParams) -> Result<Array3<T>> {
    max_pool_with(x, p, Isa::detect(), true)
}

pub(crate) fn max_pool_with<T: Pixel>(
    x: ArrayView3<T>,
    p: &PoolParams,
    isa: Isa,
    allow_fused: bool,
) -> Result<Array3<T>> {
    // SAFETY: `max_2x2_rows` writes every element of each chunk of whole rows.
    unsafe {
        pool_with(
            x,
            p,
            allow_fused,
            |ctx, first, chunk| max_2x2_rows(isa, ctx, first, chunk),
            |ctx, first, chunk| max_rows(isa, ctx, first, chunk),
        )
    }
}

/// Average pooling of an `(H, W, C)` image: `(H', W', C)`; floats keep their
/// dtype, integers give `f64` (as `numpy.mean`).
///
/// # Errors
/// As [`max_pool`].
pub fn avg_pool<T: Pixel>(x: ArrayView3<T>, p: &PoolParams) -> Result<Array3<T::Avg>> {
    avg_pool_with(x, p, Isa::detect(), true)
}

pub(crate) fn avg_pool_with<T: Pixel>(
    x: ArrayView3<T>,
    p: &PoolParams,
    isa: Isa,
    allow_fused: bool,
) -> Result<Array3<T::Avg>> {
    // SAFETY: `avg_2x2_rows` writes every element of each chunk of whole rows.
    unsafe {
        pool_with(
            x,
            p,
            allow_fused,
            |ctx, first, chunk| avg_2x2_rows(isa, ctx, first, chunk),
            |ctx, first, chunk| avg_rows(isa, ctx, first, chunk),
        )
    }
}

/// The driver shared by max and average pooling: checks the arguments, lays
/// the image out contiguously and fills the output's row chunks with `fused`
/// (2×2, stride 1) or `generic`, on rayon's pool when the work is large.
///
/// # Safety
/// `fused` must write every element of each chunk it is given.
unsafe fn pool_with<T, O, F, G>(
    x: ArrayView3<T>,
    p: &PoolParams,
    allow_fused: bool,
    fused: F,
    generic: G,
) -> Result<Array3<O>>
where
    T: Pixel,
    O: Copy + Default + Send + Sync,
    F: Fn(&PoolCtx<'_, T>, usize, &mut [MaybeUninit<O>]) + Sync,
    G: Fn(&PoolCtx<'_, T>, usize, &mut [O]) + Sync,
{
    let (ho, wo) = check(&x, p)?;
    let (_, w, c) = x.dim();
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout is contiguous");
    let ctx = PoolCtx {
        src,
        c,
        row_len: w * c,
        size: p.size,
        stride: p.stride,
        wo,
    };
    let parallel = ho * wo * c * p.size * p.size >= POOL_PARALLEL_WORK;
    let out = if allow_fused && p.size == 2 && p.stride == 1 {
        // SAFETY: the caller guarantees `fused` writes every element.
        unsafe {
            super::build_rows_uninit(ho, wo * c, parallel, |first, chunk| {
                fused(&ctx, first, chunk);
            })?
        }
    } else {
        super::build_rows(ho, wo * c, parallel, |first, chunk| {
            generic(&ctx, first, chunk);
        })?
    };
    Ok(Array3::from_shape_vec((ho, wo, c), out).expect("shape matches length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2, Axis};

    fn two_d<T: Pixel>(x: &Array2<T>) -> ArrayView3<'_, T> {
        x.view().insert_axis(Axis(2))
    }

    #[test]
    fn course_example() {
        let x = Array2::from_shape_fn((4, 4), |(i, j)| (i * 4 + j + 1) as i64);
        let p = PoolParams { size: 2, stride: 1 };
        let m = max_pool(two_d(&x), &p).unwrap().remove_axis(Axis(2));
        assert_eq!(m, array![[6, 7, 8], [10, 11, 12], [14, 15, 16]]);
        let a = avg_pool(two_d(&x), &p).unwrap().remove_axis(Axis(2));
        assert_eq!(
            a,
            array![[3.5, 4.5, 5.5], [7.5, 8.5, 9.5], [11.5, 12.5, 13.5]]
        );
    }

    /// Direct definition.
    fn reference(x: &Array3<f64>, p: usize, s: usize, max: bool) -> Array3<f64> {
        let (h, w, c) = x.dim();
        Array3::from_shape_fn(((h - p) / s + 1, (w - p) / s + 1, c), |(i, j, ch)| {
            let win = (0..p)
                .flat_map(|a| (0..p).map(move |b| (a, b)))
                .map(|(a, b)| x[[i * s + a, j * s + b, ch]]);
            if max {
                win.fold(f64::NEG_INFINITY, f64::max_nan)
            } else {
                win.sum::<f64>() / (p * p) as f64
            }
        })
    }

    #[test]
    fn every_path_matches_the_definition() {
        let x = Array3::from_shape_fn((37, 45, 3), |(i, j, c)| {
            ((i * 7919 + j * 104_729 + c * 13) % 1000) as f64 / 7.0
        });
        for &(p, s) in &[(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (5, 3)] {
            let pp = PoolParams { size: p, stride: s };
            for isa in Isa::available() {
                for fused in [false, true] {
                    let m = max_pool_with(x.view(), &pp, isa, fused).unwrap();
                    assert_eq!(m, reference(&x, p, s, true), "max p={p} s={s} {isa:?}");
                    let a = avg_pool_with(x.view(), &pp, isa, fused).unwrap();
                    for (u, v) in a.iter().zip(&reference(&x, p, s, false)) {
                        assert!((u - v).abs() < 1e-9);
                    }
                }
            }
        }
    }

    #[test]
    fn fused_2x2_equals_generic_exactly() {
        let x = Array3::from_shape_fn((256, 300, 1), |(i, j, _)| {
            ((i * 31 + j * 17) % 97) as f32 * 0.37
        });
        let pp = PoolParams { size: 2, stride: 1 };
        let base_m = max_pool_with(x.view(), &pp, Isa::Baseline, false).unwrap();
        let base_a = avg_pool_with(x.view(), &pp, Isa::Baseline, false).unwrap();
        for isa in Isa::available() {
            assert_eq!(max_pool_with(x.view(), &pp, isa, true).unwrap(), base_m);
            assert_eq!(avg_pool_with(x.view(), &pp, isa, true).unwrap(), base_a);
        }
    }

    /// The fused 2×2 paths write their output without zeroing it first: on
    /// every width (narrow, odd, wider than a vector), channel count, element
    /// type and instruction set, every element must equal the generic path's.
    #[test]
    fn fused_2x2_paths_write_every_element_like_the_generic_path() {
        fn check<T: Pixel>(f: impl Fn(usize, usize, usize) -> T)
        where
            T::Avg: PartialEq,
        {
            for &(h, w, c) in &[
                (2, 2, 1),
                (3, 2, 3),
                (5, 17, 1),
                (9, 33, 2),
                (40, 129, 3),
                (7, 300, 4),
            ] {
                let x = Array3::from_shape_fn((h, w, c), |(i, j, k)| f(i, j, k));
                let pp = PoolParams { size: 2, stride: 1 };
                let want = max_pool_with(x.view(), &pp, Isa::Baseline, false).unwrap();
                let want_avg = avg_pool_with(x.view(), &pp, Isa::Baseline, false).unwrap();
                for isa in Isa::available() {
                    let got = max_pool_with(x.view(), &pp, isa, true).unwrap();
                    assert_eq!(got, want, "({h}, {w}, {c}) {isa:?}");
                    let got = avg_pool_with(x.view(), &pp, isa, true).unwrap();
                    assert_eq!(got, want_avg, "avg ({h}, {w}, {c}) {isa:?}");
                }
            }
        }
        check(|i, j, k| ((i * 7919 + j * 104_729 + k * 13) % 1000) as f32 - 500.0);
        check(|i, j, k| ((i * 31 + j * 17 + k) % 97) as f64 * 0.37);
        check(|i, j, k| ((i * 31 + j * 17 + k) % 251) as u8);
        check(|i, j, k| ((i * 31 + j * 17 + k) % 97) as i64 - 40);
    }

    /// Big enough to be split over rayon's threads, so chunks start on odd rows
    /// and end with a lone row; NaNs sit at chunk-sized strides.
    #[test]
    fn fused_2x2_max_in_parallel_chunks_equals_the_generic_path() {
        let mut x = Array3::from_shape_fn((1031, 1001, 1), |(i, j, _)| {
            ((i * 31 + j * 17) % 97) as f32 * 0.37
        });
        for r in (3..1031).step_by(67) {
            x[[r, (r * 13) % 1001, 0]] = f32::NAN;
        }
        let pp = PoolParams { size: 2, stride: 1 };
        let want = max_pool_with(x.view(), &pp, Isa::Baseline, false).unwrap();
        for isa in Isa::available() {
            let got = max_pool_with(x.view(), &pp, isa, true).unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!(a == b || (a.is_nan() && b.is_nan()), "{isa:?}");
            }
        }
    }

    #[test]
    fn nan_propagates_through_max() {
        let mut x = Array2::from_elem((3, 3), 1.0f32);
        x[[1, 1]] = f32::NAN;
        x[[0, 0]] = 5.0;
        for fused in [false, true] {
            let m = max_pool_with(
                two_d(&x),
                &PoolParams { size: 2, stride: 1 },
                Isa::detect(),
                fused,
            )
            .unwrap();
            assert!(m.iter().all(|v| v.is_nan()));
        }
    }

    #[test]
    fn nan_anywhere_in_a_window_propagates_on_every_path() {
        for &(h, w, c) in &[(5, 40, 1), (6, 33, 3)] {
            for pos in [(0, 0), (h - 1, w - 1), (2, w - 1), (h - 1, 0), (3, 17)] {
                let mut x = Array3::from_shape_fn((h, w, c), |(i, j, k)| (i * 3 + j + k) as f64);
                x[[pos.0, pos.1, c - 1]] = f64::NAN;
                for &(p, s) in &[(2, 1), (3, 1), (2, 2)] {
                    let pp = PoolParams { size: p, stride: s };
                    let want = reference(&x, p, s, true);
                    for isa in Isa::available() {
                        for fused in [false, true] {
                            let got = max_pool_with(x.view(), &pp, isa, fused).unwrap();
                            for (a, b) in got.iter().zip(&want) {
                                assert!(
                                    a == b || (a.is_nan() && b.is_nan()),
                                    "{pos:?} p={p} s={s}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Array2::<u8>::zeros((3, 5));
        assert!(max_pool(two_d(&x), &PoolParams { size: 0, stride: 1 }).is_err());
        assert!(max_pool(two_d(&x), &PoolParams { size: 4, stride: 1 }).is_err());
        assert!(avg_pool(two_d(&x), &PoolParams { size: 2, stride: 0 }).is_err());
        assert_eq!(
            max_pool(two_d(&x), &PoolParams { size: 3, stride: 1 })
                .unwrap()
                .dim(),
            (1, 3, 1)
        );
    }
}
