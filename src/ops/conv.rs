//! 2-D convolution as deep learning defines it: cross-correlation (the kernel
//! is not flipped), summed over channels, with stride and zero padding.
//!
//! One cohesive thing: the generic convolution, its fused 3×3 fast path and
//! the tests that keep the two equal, hence its length.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use ndarray::{Array3, ArrayView3, ArrayView4};

use super::simd::{multiversion, Isa};
use super::{shape_str, Pixel, PARALLEL_WORK};
use crate::error::{Error, Result};

/// Multiply-adds from which a convolution spreads over rayon's pool. Measured
/// on the benchmark machine with OpenCV's and PyTorch's pools beside it: a 3×3
/// convolution of a 512×512 image (2.4 M) is faster on the calling thread.
const CONV_PARALLEL_WORK: usize = PARALLEL_WORK * 16;

/// The element types a convolution computes in: `f32`, `f64` and `i64`
/// (integers of every width are widened to `i64`, as `numpy.einsum` gives).
pub trait ConvElem: Pixel + Default {
    /// `acc + self * k`; fused (one rounding) when `FMA` is set. Integer
    /// arithmetic wraps on overflow, as numpy's does.
    #[must_use]
    fn madd<const FMA: bool>(self, k: Self, acc: Self) -> Self;
    /// Converts any pixel type into this one (numpy's `astype`).
    #[must_use]
    fn from_pixel<S: Pixel>(s: S) -> Self;
    /// `self * k` (wrapping for integers).
    #[must_use]
    fn mul(self, k: Self) -> Self;
    /// `self + other` (wrapping for integers).
    #[must_use]
    fn add(self, other: Self) -> Self;
    /// Checks that no output of correlating `x` with `k` can overflow:
    /// nothing for floats; for integers, `max|x| · Σ|k|` (of the largest
    /// kernel of the bank) must fit, which bounds every partial sum, so
    /// results are exact or refused, never wrapped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when an output could overflow.
    fn check_exact(_x: ArrayView3<Self>, _k: ArrayView4<Self>) -> Result<()> {
        Ok(())
    }
}

/// Floats multiply-add in their own type, fused when `FMA` is set.
macro_rules! float_conv_elem {
    ($t:ty, $from:ident) => {
        impl ConvElem for $t {
            #[inline(always)]
            fn madd<const FMA: bool>(self, k: Self, acc: Self) -> Self {
                if FMA {
                    self.mul_add(k, acc)
                } else {
                    acc + self * k
                }
            }
            #[inline(always)]
            fn from_pixel<S: Pixel>(s: S) -> Self {
                s.$from()
            }
            #[inline(always)]
            fn mul(self, k: Self) -> Self {
                self * k
            }
            #[inline(always)]
            fn add(self, other: Self) -> Self {
                self + other
            }
        }
    };
}

float_conv_elem!(f32, to_f32);
float_conv_elem!(f64, to_f64);

impl ConvElem for i64 {
    #[inline(always)]
    fn madd<const FMA: bool>(self, k: Self, acc: Self) -> Self {
        acc.wrapping_add(self.wrapping_mul(k))
    }
    #[inline(always)]
    fn from_pixel<S: Pixel>(s: S) -> Self {
        s.to_i64()
    }
    #[inline(always)]
    fn mul(self, k: Self) -> Self {
        self.wrapping_mul(k)
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn check_exact(x: ArrayView3<Self>, k: ArrayView4<Self>) -> Result<()> {
        let max_x = x.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
        let max_k = k
            .outer_iter()
            .map(|kernel| {
                kernel
                    .iter()
                    .map(|v| u128::from(v.unsigned_abs()))
                    .sum::<u128>()
            })
            .max()
            .unwrap_or(0);
        let bound = u128::from(max_x).saturating_mul(max_k);
        if bound > i64::MAX as u128 {
            return Err(Error::invalid(format!(
                "integer convolution is exact in int64, but max|image| ({max_x}) × sum|kernel| \
                 ({max_k}) exceeds 2**63 - 1, so results could overflow; convert the image \
                 and kernel to float64 (or use smaller values)"
            )));
        }
        Ok(())
    }
}

/// Zero padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `p` zeros on every side (`0` is Keras' `"valid"`).
    Explicit(usize),
    /// TensorFlow/Keras `"same"`: the output is `ceil(H / stride)` rows; the
    /// `max((out - 1) * stride + kh - H, 0)` padding rows are split with the
    /// extra one at the bottom (and the extra column at the right).
    Same,
}

/// Stride and padding of [`conv2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// Step between windows along both axes (≥ 1).
    pub stride: usize,
    pub padding: Padding,
}

impl Default for ConvParams {
    fn default() -> Self {
        ConvParams {
            stride: 1,
            padding: Padding::Explicit(0),
        }
    }
}

/// Padding before and after one axis of length `n` for kernel size `k`.
fn resolve(padding: Padding, n: usize, k: usize, stride: usize) -> (usize, usize) {
    match padding {
        Padding::Explicit(p) => (p, p),
        Padding::Same => {
            let out = n.div_ceil(stride);
            let total = ((out - 1) * stride + k).saturating_sub(n);
            (total / 2, total - total / 2)
        }
    }
}

/// Everything a row kernel reads; shared by all threads.
pub(crate) struct ConvCtx<'a, T> {
    /// The image as `C` planes of `H × W` (channel-first, contiguous).
    planes: &'a [T],
    /// The kernel bank as `(n, C, kh, kw)`, contiguous.
    kernel: &'a [T],
    /// A row of `W` zeros: the padding rows of the fused 3×3 path.
    zeros: &'a [T],
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pt: usize,
    pl: usize,
    ho: usize,
    wo: usize,
}

/// The range of output columns `j` for which `j * s + dj - pl` is inside `[0, w)`.
#[inline(always)]
fn col_range(dj: usize, pl: usize, s: usize, w: usize, wo: usize) -> (usize, usize) {
    let lo = if dj >= pl { 0 } else { (pl - dj).div_ceil(s) };
    if w + pl <= dj {
        return (0, 0);
    }
    let hi = ((w - 1 + pl - dj) / s + 1).min(wo);
    (lo.min(hi), hi)
}

/// Adds one channel's contribution to output row `i`: generic sizes and strides.
/// For each kernel tap it runs one `axpy` over contiguous slices.
#[inline(always)]
fn row_generic<T: ConvElem, const FMA: bool>(
    ctx: &ConvCtx<'_, T>,
    plane: &[T],
    kern: &[T],
    i: usize,
    out: &mut [T],
) {
    let s = ctx.stride;
    for di in 0..ctx.kh {
        let Some(r) = (i * s + di).checked_sub(ctx.pt).filter(|&r| r < ctx.h) else {
            continue;
        };
        let xrow = &plane[r * ctx.w..(r + 1) * ctx.w];
        for dj in 0..ctx.kw {
            let kv = kern[di * ctx.kw + dj];
            let (lo, hi) = col_range(dj, ctx.pl, s, ctx.w, ctx.wo);
            if lo >= hi {
                continue;
            }
            let first = lo * s + dj - ctx.pl;
            if s == 1 {
                let src = &xrow[first..first + (hi - lo)];
                for (a, &x) in out[lo..hi].iter_mut().zip(src) {
                    *a = x.madd::<FMA>(kv, *a);
                }
            } else {
                for (a, &x) in out[lo..hi].iter_mut().zip(xrow[first..].iter().step_by(s)) {
                    *a = x.madd::<FMA>(kv, *a);
                }
            }
        }
    }
}

/// Output rows the fused 3×3 path computes together: each input row it loads
/// serves up to three of them, so a block of four output rows loads six input
/// rows (4.5 row loads per output row instead of 9 when going row by row).
const BLOCK: usize = 4;

/// Computes `L` columns of [`BLOCK`] output rows of the 3×3 stride-1
/// correlation of one channel. `x[q]` points at the first of the `L + 2`
/// input columns of input row `q`; output row `b` reads input rows `b, b + 1,
/// b + 2`.
///
/// Each output is `s0 + (s1 + s2)` with `s_d` the three taps of kernel row
/// `d` chained as `fma(x2, k2, fma(x1, k1, x0 * k0))`: three independent
/// chains (one chain of nine dependent multiply-adds would be latency-bound).
/// Floats may thus differ from [`row_generic`] in the last bits.
///
/// # Safety
/// Each `x[q]..x[q] + L + 2` must be readable.
#[inline(always)]
unsafe fn chunk_3x3<T: ConvElem, const FMA: bool, const L: usize>(
    x: &[*const T; BLOCK + 2],
    k: &[T; 9],
) -> [[T; L]; BLOCK] {
    // Computed into a local block (which no input can alias, so the lane loop
    // vectorises without run-time overlap checks).
    let mut o = [[T::default(); L]; BLOCK];
    for l in 0..L {
        // SAFETY: l + d < L + 2, so `x[q] + l + d` is readable (the caller's contract).
        let v = |q: usize, d: usize| unsafe { *x[q].add(l + d) };
        for (b, ob) in o.iter_mut().enumerate() {
            let s = |d: usize| {
                let q = b + d;
                v(q, 2).madd::<FMA>(
                    k[3 * d + 2],
                    v(q, 1).madd::<FMA>(k[3 * d + 1], v(q, 0).mul(k[3 * d])),
                )
            };
            ob[l] = s(0).add(s(1).add(s(2)));
        }
    }
    o
}

/// Writes a block computed by [`chunk_3x3`] to `out` (with `ACC`, adds it to
/// what `out` holds).
///
/// # Safety
/// Each `out[b]..out[b] + L` must be writable, and initialised when `ACC`.
#[inline(always)]
unsafe fn store_3x3<T: ConvElem, const L: usize, const ACC: bool>(
    mut o: [[T; L]; BLOCK],
    out: &[*mut T; BLOCK],
) {
    for (ob, &dst) in o.iter_mut().zip(out) {
        if ACC {
            for (l, v) in ob.iter_mut().enumerate() {
                // SAFETY: `dst..dst + L` is initialised when `ACC` (the caller's contract).
                *v = unsafe { *dst.add(l) }.add(*v);
            }
        }
        // SAFETY: `dst..dst + L` is writable (the caller's contract) and `o` is local.
        unsafe { std::ptr::copy_nonoverlapping(ob.as_ptr(), dst, L) };
    }
}

/// The output columns `[start, end)` that a fused 3×3 pass computes in
/// place, `L` at a time: interior columns (all nine taps inside the image),
/// starting where the row at `out` is aligned to a whole vector (a store that
/// straddles two cache lines costs two). The columns outside go through
/// [`edges_3x3`].
#[inline(always)]
fn interior_3x3<T, const L: usize>(ctx: &ConvCtx<'_, T>, out: *const T) -> (usize, usize) {
    let (w, wo, pl) = (ctx.w, ctx.wo, ctx.pl);
    // Interior: output columns j with j - pl >= 0 and j - pl + 2 < w.
    let lo = pl.min(wo);
    let hi = (w + pl).saturating_sub(2).clamp(lo, wo);
    let misaligned = (out as usize / std::mem::size_of::<T>() + lo) % L;
    let start = (lo + (L - misaligned) % L).min(hi);
    (start, start + (hi - start) / L * L)
}

/// One channel's contribution to a block of [`BLOCK`] output rows, all `wo`
/// columns: the interior ([`interior_3x3`]) in place, `L` columns at a time,
/// then the border columns through [`edges_3x3`].
///
/// # Safety
/// `x[q]` points at `ctx.w` readable values (an image row or `ctx.zeros`);
/// `out[b]` at `ctx.wo` writable values (initialised when `ACC`), none of them
/// overlapping an input. `edge` holds at least `(BLOCK + 2) * (L + 2) + BLOCK * L`
/// values.
#[inline(always)]
unsafe fn block_3x3<T: ConvElem, const FMA: bool, const L: usize, const ACC: bool>(
    ctx: &ConvCtx<'_, T>,
    x: &[*const T; BLOCK + 2],
    k: &[T; 9],
    out: &[*mut T; BLOCK],
    edge: &mut [T],
) {
    let (wo, pl) = (ctx.wo, ctx.pl);
    let (start, end) = interior_3x3::<T, L>(ctx, out[0]);
    let mut j = start;
    // With AVX-512, each step's results are stored only after the next step's
    // inputs are loaded: otherwise, when the output lies a multiple of 4 KiB from the
    // input (two fresh 1 MiB buffers from `mmap` do), those loads partly match
    // the addresses of the stores just made in their low 12 bits and the CPU
    // holds them back as possibly dependent (30% slower at 512×512). Holding
    // a step's results takes registers that only AVX-512 has (32): with
    // AVX2's 16 the held results and the taps spill to the stack, which
    // costs more than the stalls (7–11% slower at 512², 700² and 1024²,
    // float32 and float64, with `CNNRS_SIMD=avx2` on an AVX-512 machine).
    let hold = FMA && L * std::mem::size_of::<T>() >= 64;
    let step = |j: usize| {
        debug_assert!(j >= pl && j - pl + L + 2 <= ctx.w && j + L <= wo);
        // SAFETY: input columns j - pl .. j - pl + L + 2 lie in [0, w) (asserted above).
        unsafe { chunk_3x3::<T, FMA, L>(&x.map(|p| p.add(j - pl)), k) }
    };
    // SAFETY: output columns j .. j + L lie in [0, wo) (asserted in `step`).
    let store = |o, j: usize| unsafe { store_3x3::<T, L, ACC>(o, &out.map(|p| p.add(j))) };
    if !hold {
        // SSE2 and AVX2 have 16 vector registers: a step's inputs already fill them.
        while j < end {
            store(step(j), j);
            j += L;
        }
    } else if j < end {
        let mut pending = step(j);
        j += L;
        while j < end {
            let next = step(j);
            store(pending, j - L);
            pending = next;
            j += L;
        }
        store(pending, j - L);
    }
    // SAFETY: as this function's contract.
    unsafe { edges_3x3::<T, FMA, L, ACC>(ctx, x, k, out, edge, (start, end)) };
}

/// One channel's contribution to the output columns of a block of [`BLOCK`]
/// rows outside `[start, end)` (the border, within `pl` of the left edge,
/// and the columns before and after the whole vectors computed in place),
/// through small zero-padded copies in `edge`.
///
/// # Safety
/// As [`block_3x3`]; `start <= end <= ctx.wo`.
#[inline(always)]
unsafe fn edges_3x3<T: ConvElem, const FMA: bool, const L: usize, const ACC: bool>(
    ctx: &ConvCtx<'_, T>,
    x: &[*const T; BLOCK + 2],
    k: &[T; 9],
    out: &[*mut T; BLOCK],
    edge: &mut [T],
    (start, end): (usize, usize),
) {
    let (w, wo, pl) = (ctx.w, ctx.wo, ctx.pl);
    debug_assert!(start <= end && end <= wo);
    let (src, dst) = edge.split_at_mut((BLOCK + 2) * (L + 2));
    debug_assert!(dst.len() >= BLOCK * L);
    for (start, end) in [(0, start), (end, wo)] {
        for s in (start..end).step_by(L) {
            let m = L.min(end - s);
            // Padded columns s .. s + L + 2 are image columns s - pl ...:
            // those inside the image are copied, the others are zeros.
            let t_lo = pl.saturating_sub(s).min(L + 2);
            let t_hi = (w + pl).saturating_sub(s).clamp(t_lo, L + 2);
            for (q, &row) in x.iter().enumerate() {
                // SAFETY: `row` points at `w` readable values.
                let row = unsafe { std::slice::from_raw_parts(row, w) };
                let padded = &mut src[q * (L + 2)..(q + 1) * (L + 2)];
                padded.fill(T::default());
                if t_lo < t_hi {
                    padded[t_lo..t_hi].copy_from_slice(&row[s + t_lo - pl..s + t_hi - pl]);
                }
            }
            for (b, &o) in out.iter().enumerate() {
                let d = &mut dst[b * L..(b + 1) * L];
                if ACC {
                    // SAFETY: s + m <= wo, and the output is initialised when `ACC`.
                    d[..m].copy_from_slice(unsafe { std::slice::from_raw_parts(o.add(s), m) });
                }
            }
            let xs: [*const T; BLOCK + 2] = std::array::from_fn(|q| src[q * (L + 2)..].as_ptr());
            let os: [*mut T; BLOCK] = std::array::from_fn(|b| dst[b * L..].as_mut_ptr());
            // SAFETY: `src` holds BLOCK + 2 rows of L + 2 values and `dst`
            // BLOCK rows of L (initialised: `edge` is a `Vec<T>`).
            unsafe { store_3x3::<T, L, ACC>(chunk_3x3::<T, FMA, L>(&xs, k), &os) };
            for (b, &o) in out.iter().enumerate() {
                // SAFETY: s + m <= wo; `o` points at `wo` writable values
                // that do not overlap `dst`.
                unsafe { std::ptr::copy_nonoverlapping(dst[b * L..].as_ptr(), o.add(s), m) };
            }
        }
    }
}

/// The fused 3×3 stride-1 path with `L` columns per step: computes the
/// output rows `first, first + 1, …` (global index `o * ho + i`) into `out`,
/// which holds whole rows, uninitialised, and writes every element of it.
#[inline(always)]
fn rows_3x3_lanes<T: ConvElem, const FMA: bool, const L: usize>(
    ctx: &ConvCtx<'_, T>,
    first: usize,
    out: &mut [MaybeUninit<T>],
) {
    let (w, wo, plane_len) = (ctx.w, ctx.wo, ctx.h * ctx.w);
    let rows = out.len() / wo;
    assert!(rows * wo == out.len() && ctx.zeros.len() >= w);
    let base = out.as_mut_ptr().cast::<T>();
    // Where the rows past the end of a short block go (computed, then dropped).
    let mut spill = vec![T::default(); wo];
    let mut edge = vec![T::default(); (BLOCK + 2) * (L + 2) + BLOCK * L];
    let mut r = 0;
    while r < rows {
        let g = first + r;
        let (o, i) = (g / ctx.ho, g % ctx.ho);
        let n = BLOCK.min(rows - r).min(ctx.ho - i);
        let outs: [*mut T; BLOCK] = std::array::from_fn(|b| {
            if b < n {
                // SAFETY: row r + b < rows lies inside `out`.
                unsafe { base.add((r + b) * wo) }
            } else {
                spill.as_mut_ptr()
            }
        });
        for ch in 0..ctx.c {
            let at = (o * ctx.c + ch) * 9;
            let k: &[T; 9] = ctx.kernel[at..at + 9].try_into().expect("3x3 kernel");
            let plane = &ctx.planes[ch * plane_len..(ch + 1) * plane_len];
            let x: [*const T; BLOCK + 2] = std::array::from_fn(|q| {
                match (i + q)
                    .checked_sub(ctx.pt)
                    .filter(|&y| y < ctx.h && q < n + 2)
                {
                    Some(y) => plane[y * w..(y + 1) * w].as_ptr(),
                    None => ctx.zeros.as_ptr(),
                }
            });
            // SAFETY: each `x[q]` points at `w` values of the image or of
            // `zeros`; each `outs[b]` at `wo` values of a row of `out` (or of
            // `spill`), which no input overlaps; channel 0 writes every
            // column of every row, so later channels add to initialised values.
            unsafe {
                if ch == 0 {
                    block_3x3::<T, FMA, L, false>(ctx, &x, k, &outs, &mut edge);
                } else {
                    block_3x3::<T, FMA, L, true>(ctx, &x, k, &outs, &mut edge);
                }
            }
        }
        r += n;
    }
}

/// [`rows_3x3_lanes`] with `L` as wide as one vector register of `BYTES`
/// (16 `f32` for AVX-512, 8 for AVX2, 4 for SSE2): a step's eighteen input
/// vectors and four outputs then fit the register file (AVX-512's 32).
#[inline(always)]
fn rows_3x3_body<T: ConvElem, const FMA: bool, const BYTES: usize>(
    ctx: &ConvCtx<'_, T>,
    first: usize,
    out: &mut [MaybeUninit<T>],
) {
    match BYTES / std::mem::size_of::<T>() {
        16.. => rows_3x3_lanes::<T, FMA, 16>(ctx, first, out),
        8 => rows_3x3_lanes::<T, FMA, 8>(ctx, first, out),
        4 => rows_3x3_lanes::<T, FMA, 4>(ctx, first, out),
        _ => rows_3x3_lanes::<T, FMA, 2>(ctx, first, out),
    }
}

/// Computes the output rows `first, first + 1, …` (global index `o * ho + i`)
/// into `out`, which holds whole rows and starts zeroed.
#[inline(always)]
fn rows_body<T: ConvElem, const FMA: bool>(ctx: &ConvCtx<'_, T>, first: usize, out: &mut [T]) {
    let plane_len = ctx.h * ctx.w;
    let taps = ctx.kh * ctx.kw;
    for (g, row) in (first..).zip(out.chunks_exact_mut(ctx.wo)) {
        let (o, i) = (g / ctx.ho, g % ctx.ho);
        for ch in 0..ctx.c {
            let kern = &ctx.kernel[(o * ctx.c + ch) * taps..(o * ctx.c + ch + 1) * taps];
            let plane = &ctx.planes[ch * plane_len..(ch + 1) * plane_len];
            row_generic::<T, FMA>(ctx, plane, kern, i, row);
        }
    }
}

multiversion!(fn conv_rows<T: ConvElem>(ctx: &ConvCtx<'_, T>, first: usize, out: &mut [T]) => rows_body);
multiversion!(fn conv_rows_3x3<T: ConvElem>(ctx: &ConvCtx<'_, T>, first: usize, out: &mut [MaybeUninit<T>]) => rows_3x3_body[vector bytes]);

/// Cross-correlates an `(H, W, C)` image with a bank of `n` kernels
/// `(n, kh, kw, C)`, summing over channels: the result is `(n, H', W')` with
/// `H' = (H + 2p - kh) // stride + 1` (and `ceil(H / stride)` for
/// [`Padding::Same`]). Padding is zeros.
///
/// Integer images are computed in `i64`, exactly: inputs whose results could
/// overflow are refused (see [`ConvElem::check_exact`]).
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty image or kernel, a kernel whose
/// channel count differs from the image's, `stride == 0`, a kernel larger
/// than the padded image, a result over [`super::MAX_RESULT_BYTES`], or
/// integers whose results could overflow `i64`.
pub fn conv2d<T: ConvElem>(
    x: ArrayView3<T>,
    k: ArrayView4<T>,
    p: &ConvParams,
) -> Result<Array3<T>> {
    conv2d_with(x, k, p, Isa::detect(), true)
}

/// [`conv2d`] compiled for `isa`, optionally without the fused 3×3 path
/// (tests compare every path with the baseline generic one).
pub(crate) fn conv2d_with<T: ConvElem>(
    x: ArrayView3<T>,
    k: ArrayView4<T>,
    p: &ConvParams,
    isa: Isa,
    allow_fused: bool,
) -> Result<Array3<T>> {
    let (h, w, c) = x.dim();
    let (n, kh, kw, kc) = k.dim();
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::invalid(format!(
            "image must be non-empty, got shape {}",
            shape_str(x.shape())
        )));
    }
    if n == 0 || kh == 0 || kw == 0 || kc == 0 {
        return Err(Error::invalid(format!(
            "kernel must be non-empty, got shape {}",
            shape_str(k.shape())
        )));
    }
    if kc != c {
        return Err(Error::invalid(format!(
            "kernel has {kc} channels (as a bank (n, kh, kw, C): {}) but the image has {c} \
             (as (H, W, C): {}); they must match",
            shape_str(k.shape()),
            shape_str(x.shape())
        )));
    }
    if p.stride == 0 {
        return Err(Error::invalid("stride must be >= 1, got 0"));
    }
    let (pt, pb) = resolve(p.padding, h, kh, p.stride);
    let (pl, pr) = resolve(p.padding, w, kw, p.stride);
    let (Some(hp), Some(wp)) = (
        h.checked_add(pt).and_then(|v| v.checked_add(pb)),
        w.checked_add(pl).and_then(|v| v.checked_add(pr)),
    ) else {
        return Err(Error::invalid("padding is too large"));
    };
    if kh > hp || kw > wp {
        return Err(Error::invalid(format!(
            "kernel ({kh}, {kw}) is larger than the padded image ({hp}, {wp}); \
             use a smaller kernel or more padding"
        )));
    }
    let (ho, wo) = ((hp - kh) / p.stride + 1, (wp - kw) / p.stride + 1);
    super::check_result_size::<T>(&[n, ho, wo], "padding")?;
    T::check_exact(x, k)?;

    let planes: Cow<'_, [T]> = match (c, x.as_slice()) {
        (1, Some(s)) => Cow::Borrowed(s),
        _ => Cow::Owned(x.permuted_axes([2, 0, 1]).iter().copied().collect()),
    };
    let kernel: Vec<T> = k.permuted_axes([0, 3, 1, 2]).iter().copied().collect();
    let zeros = vec![T::default(); w];
    let ctx = ConvCtx {
        planes: &planes,
        kernel: &kernel,
        zeros: &zeros,
        h,
        w,
        c,
        kh,
        kw,
        stride: p.stride,
        pt,
        pl,
        ho,
        wo,
    };
    let fused = allow_fused && kh == 3 && kw == 3 && p.stride == 1;
    let work = [n, ho, wo, kh, kw, c]
        .into_iter()
        .fold(1usize, usize::saturating_mul);
    let (rows, parallel) = (n.saturating_mul(ho), work >= CONV_PARALLEL_WORK);
    let out = if fused {
        // SAFETY: `conv_rows_3x3` writes every element of each chunk.
        unsafe {
            super::build_rows_uninit(rows, wo, parallel, |first, chunk| {
                conv_rows_3x3(isa, &ctx, first, chunk);
            })?
        }
    } else {
        super::build_rows(rows, wo, parallel, |first, chunk| {
            conv_rows(isa, &ctx, first, chunk);
        })?
    };
    Ok(Array3::from_shape_vec((n, ho, wo), out).expect("shape matches length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2, Array4, Axis};

    fn conv2(x: &Array2<i64>, k: &Array2<i64>, p: ConvParams) -> Array2<i64> {
        let x3 = x.view().insert_axis(Axis(2));
        let k4 = k.view().insert_axis(Axis(0)).insert_axis(Axis(3));
        conv2d(x3, k4, &p).unwrap().remove_axis(Axis(0))
    }

    /// Direct definition on an explicitly zero-padded image.
    fn reference(
        x: &Array3<f64>,
        k: &Array4<f64>,
        s: usize,
        pads: (usize, usize, usize, usize),
    ) -> Array3<f64> {
        let (h, w, c) = x.dim();
        let (n, kh, kw, _) = k.dim();
        let (pt, pb, pl, pr) = pads;
        let (ho, wo) = ((h + pt + pb - kh) / s + 1, (w + pl + pr - kw) / s + 1);
        Array3::from_shape_fn((n, ho, wo), |(o, i, j)| {
            let mut acc = 0.0;
            for di in 0..kh {
                for dj in 0..kw {
                    let (r, q) = (
                        (i * s + di) as isize - pt as isize,
                        (j * s + dj) as isize - pl as isize,
                    );
                    if r < 0 || q < 0 || r >= h as isize || q >= w as isize {
                        continue;
                    }
                    for ch in 0..c {
                        acc += x[[r as usize, q as usize, ch]] * k[[o, di, dj, ch]];
                    }
                }
            }
            acc
        })
    }

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    }

    #[test]
    fn course_example() {
        let x = array![[1, 2, 0], [4, 5, 6], [7, 8, 9]];
        let k = array![[1, 0], [0, -1]];
        assert_eq!(
            conv2(&x, &k, ConvParams::default()),
            array![[-4, -4], [-4, -4]]
        );
    }

    #[test]
    fn same_padding_keeps_the_size_and_puts_the_extra_row_last() {
        let x = Array2::from_shape_fn((5, 6), |(i, j)| (i * 6 + j) as i64);
        let k = Array2::from_elem((2, 2), 1);
        let out = conv2(
            &x,
            &k,
            ConvParams {
                stride: 1,
                padding: Padding::Same,
            },
        );
        assert_eq!(out.dim(), (5, 6));
        // even kernel: no padding on top/left, one row/column at the bottom/right
        assert_eq!(out[[0, 0]], 1 + 6 + 7); // x[0,0] + x[0,1] + x[1,0] + x[1,1]
        assert_eq!(out[[4, 5]], 29);
        let s2 = conv2(
            &x,
            &Array2::from_elem((3, 3), 1),
            ConvParams {
                stride: 2,
                padding: Padding::Same,
            },
        );
        assert_eq!(s2.dim(), (3, 3));
    }

    #[test]
    fn matches_reference_for_strides_paddings_channels_and_banks() {
        let mut seed = 7;
        for &(h, w, c, n, kh, kw, s, p) in &[
            (7, 9, 1, 1, 3, 3, 1, 1),
            (7, 9, 3, 2, 3, 3, 1, 0),
            (8, 5, 2, 3, 2, 3, 2, 1),
            (10, 11, 1, 2, 5, 1, 3, 2),
            (4, 4, 1, 1, 3, 3, 1, 3),
            (120, 130, 2, 2, 3, 3, 1, 1),
        ] {
            let x = Array3::from_shape_fn((h, w, c), |_| lcg(&mut seed));
            let k = Array4::from_shape_fn((n, kh, kw, c), |_| lcg(&mut seed));
            let want = reference(&x, &k, s, (p, p, p, p));
            for isa in Isa::available() {
                for fused in [false, true] {
                    let got = conv2d_with(
                        x.view(),
                        k.view(),
                        &ConvParams {
                            stride: s,
                            padding: Padding::Explicit(p),
                        },
                        isa,
                        fused,
                    )
                    .unwrap();
                    assert_eq!(got.dim(), want.dim());
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-12, "{isa:?} fused={fused}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn fused_3x3_and_simd_paths_equal_the_generic_path() {
        let mut seed = 11;
        let x = Array3::from_shape_fn((40, 67, 1), |_| lcg(&mut seed) as f32);
        let k = Array4::from_shape_fn((2, 3, 3, 1), |_| lcg(&mut seed) as f32);
        for padding in [Padding::Same, Padding::Explicit(0), Padding::Explicit(2)] {
            let p = ConvParams { stride: 1, padding };
            let base = conv2d_with(x.view(), k.view(), &p, Isa::Baseline, false).unwrap();
            for isa in Isa::available() {
                let fast = conv2d_with(x.view(), k.view(), &p, isa, true).unwrap();
                for (a, b) in fast.iter().zip(&base) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{isa:?}: {a} vs {b}"
                    );
                }
            }
        }
        // integers are exact on every path
        let xi =
            Array3::from_shape_fn((20, 31, 1), |(i, j, _)| (i as i64 * 31 + j as i64) % 17 - 8);
        let ki = Array4::from_shape_fn((1, 3, 3, 1), |(_, a, b, _)| a as i64 * 3 + b as i64 - 4);
        let p = ConvParams {
            stride: 1,
            padding: Padding::Same,
        };
        let base = conv2d_with(xi.view(), ki.view(), &p, Isa::Baseline, false).unwrap();
        for isa in Isa::available() {
            assert_eq!(
                conv2d_with(xi.view(), ki.view(), &p, isa, true).unwrap(),
                base
            );
        }
    }

    /// The fused path of every instruction set against the baseline generic
    /// path, for one image and kernel bank under several paddings.
    fn check_fused<T: ConvElem>(x: &Array3<T>, k: &Array4<T>, close: impl Fn(T, T) -> bool) {
        for padding in [
            Padding::Same,
            Padding::Explicit(0),
            Padding::Explicit(1),
            Padding::Explicit(2),
            Padding::Explicit(19),
        ] {
            let p = ConvParams { stride: 1, padding };
            let Ok(base) = conv2d_with(x.view(), k.view(), &p, Isa::Baseline, false) else {
                continue; // kernel larger than the padded image
            };
            for isa in Isa::available() {
                let fast = conv2d_with(x.view(), k.view(), &p, isa, true).unwrap();
                assert_eq!(fast.dim(), base.dim());
                for ((idx, &a), &b) in fast.indexed_iter().zip(&base) {
                    assert!(
                        close(a, b),
                        "{isa:?} {padding:?} x {:?} k {:?} at {idx:?}: {a:?} vs {b:?}",
                        x.dim(),
                        k.dim()
                    );
                }
            }
        }
    }

    #[test]
    fn fused_3x3_blocks_edges_channels_and_banks_equal_the_generic_path() {
        let mut seed = 5;
        let f32_close = |a: f32, b: f32| {
            (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-5 * (1.0 + b.abs())
        };
        let f64_close = |a: f64, b: f64| {
            (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-12 * (1.0 + b.abs())
        };
        // heights around the 4-row block, widths around 2, 4, 8 and 16 lanes
        for &(h, w, c, n) in &[
            (1, 1, 1, 1),
            (2, 3, 1, 2),
            (3, 2, 2, 1),
            (5, 5, 1, 1),
            (7, 15, 3, 2),
            (9, 16, 1, 3),
            (6, 17, 2, 2),
            (13, 18, 1, 1),
            (4, 33, 1, 1),
            (11, 34, 3, 2),
            (3, 35, 1, 1),
        ] {
            let x32 = Array3::from_shape_fn((h, w, c), |_| lcg(&mut seed) as f32);
            let k32 = Array4::from_shape_fn((n, 3, 3, c), |_| lcg(&mut seed) as f32);
            check_fused(&x32, &k32, f32_close);
            check_fused(&x32.mapv(f64::from), &k32.mapv(f64::from), f64_close);
            let xi = x32.mapv(|v| (v * 40.0) as i64);
            let ki = k32.mapv(|v| (v * 20.0) as i64);
            check_fused(&xi, &ki, |a, b| a == b);
        }
        // large enough to run in parallel, in chunks that are not whole blocks
        let x = Array3::from_shape_fn((311, 257, 6), |_| lcg(&mut seed) as f32);
        let k = Array4::from_shape_fn((1, 3, 3, 6), |_| lcg(&mut seed) as f32);
        const { assert!(311 * 257 * 9 * 6 >= CONV_PARALLEL_WORK) };
        check_fused(&x, &k, f32_close);
    }

    /// AVX2 and AVX-512 run the same sums in the same order (only how the
    /// steps are scheduled differs), so the level `CNNRS_SIMD` picks changes
    /// the speed, never a bit of the result.
    #[test]
    fn fused_3x3_is_bit_identical_on_every_fma_level() {
        let fma: Vec<Isa> = Isa::available()
            .into_iter()
            .filter(|&isa| isa != Isa::Baseline)
            .collect();
        let mut seed = 17;
        for &(h, w, c) in &[(9, 37, 1), (13, 64, 2), (40, 67, 1), (6, 130, 3)] {
            let x = Array3::from_shape_fn((h, w, c), |_| lcg(&mut seed));
            let k = Array4::from_shape_fn((2, 3, 3, c), |_| lcg(&mut seed));
            let (x32, k32) = (x.mapv(|v| v as f32), k.mapv(|v| v as f32));
            for padding in [Padding::Same, Padding::Explicit(0), Padding::Explicit(2)] {
                let p = ConvParams { stride: 1, padding };
                for pair in fma.windows(2) {
                    let run = |isa| conv2d_with(x.view(), k.view(), &p, isa, true).unwrap();
                    assert_eq!(run(pair[0]), run(pair[1]), "{pair:?} {padding:?}");
                    let run32 = |isa| conv2d_with(x32.view(), k32.view(), &p, isa, true).unwrap();
                    assert_eq!(run32(pair[0]), run32(pair[1]), "{pair:?} {padding:?}");
                }
            }
        }
    }

    #[test]
    fn fused_3x3_propagates_nan_and_inf_like_the_generic_path() {
        let mut seed = 3;
        let mut x = Array3::from_shape_fn((9, 37, 1), |_| lcg(&mut seed) as f32);
        // in the interior, on the edges and in the corners
        x[[0, 0, 0]] = f32::NAN;
        x[[4, 20, 0]] = f32::INFINITY;
        x[[8, 36, 0]] = f32::NEG_INFINITY;
        x[[5, 0, 0]] = f32::INFINITY;
        x[[2, 36, 0]] = f32::NAN;
        // zero taps: 0 * inf must still give NaN
        let k = Array4::from_shape_fn((2, 3, 3, 1), |(o, a, _, _)| {
            if o == 0 && a == 1 {
                0.0
            } else {
                lcg(&mut seed) as f32
            }
        });
        check_fused(&x, &k, |a: f32, b: f32| {
            (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-5 * (1.0 + b.abs())
        });
    }

    #[test]
    fn integers_are_exact_or_refused() {
        let x = Array3::from_elem((3, 3, 1), i64::MAX / 9);
        let k = Array4::from_elem((1, 3, 3, 1), 1i64);
        let out = conv2d(x.view(), k.view(), &ConvParams::default()).unwrap();
        assert_eq!(out[[0, 0, 0]], i64::MAX / 9 * 9);
        let k = Array4::from_shape_fn((2, 3, 3, 1), |(o, ..)| 1 + o as i64);
        let err = conv2d(x.view(), k.view(), &ConvParams::default()).unwrap_err();
        assert!(err.to_string().contains("float64"), "{err}");
        let x = Array3::from_elem((3, 3, 1), i64::MIN);
        let k = Array4::from_elem((1, 1, 1, 1), 1i64);
        assert!(conv2d(x.view(), k.view(), &ConvParams::default()).is_err());
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Array3::<f64>::zeros((4, 4, 2));
        let k = Array4::<f64>::zeros((1, 3, 3, 1));
        assert!(conv2d(x.view(), k.view(), &ConvParams::default()).is_err());
        let k = Array4::<f64>::zeros((1, 5, 5, 2));
        assert!(conv2d(x.view(), k.view(), &ConvParams::default()).is_err());
        assert!(conv2d(
            x.view(),
            k.view(),
            &ConvParams {
                stride: 1,
                padding: Padding::Explicit(1)
            }
        )
        .is_ok());
        let k = Array4::<f64>::zeros((1, 3, 3, 2));
        assert!(conv2d(
            x.view(),
            k.view(),
            &ConvParams {
                stride: 0,
                padding: Padding::Same
            }
        )
        .is_err());
    }
}
