//! Run-time choice of the instruction set the row kernels are compiled for.
//!
//! The wheel targets baseline x86-64, so each hot row function is compiled a
//! second and third time inside `#[target_feature]` wrappers (AVX2+FMA and
//! AVX-512) and the best one the CPU supports is picked once, at run time.
//! `target-cpu=native` is never used: the wheel must run on any x86-64 CPU.

use std::sync::OnceLock;

/// An instruction set a row kernel can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Whatever the build target guarantees (SSE2 on x86-64); no FMA.
    Baseline,
    /// AVX2 with fused multiply-add (Haswell, Zen and later).
    Avx2Fma,
    /// AVX-512 F/VL/BW/DQ with FMA (Skylake-SP, Ice Lake, Zen 4 and later).
    Avx512,
}

impl Isa {
    /// The best instruction set this CPU supports (detected once).
    #[must_use]
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("fma")
                {
                    return Isa::Avx512;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Isa::Avx2Fma;
                }
            }
            Isa::Baseline
        })
    }

    /// Every instruction set this CPU can run, baseline first (for tests that
    /// check each compiled path against the baseline one).
    #[must_use]
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Baseline, Isa::Avx2Fma, Isa::Avx512]
            .into_iter()
            .filter(|isa| *isa as u8 <= best as u8)
            .collect()
    }

    /// A short name for benchmark reports: `"avx512"`, `"avx2+fma"`, `"baseline"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512",
        }
    }
}

/// Defines `$name(isa, args...)`, which runs the `#[inline(always)]` generic
/// row function `$body::<T, FMA>(args...)` compiled for `isa`.
///
/// Each arm is a separate monomorphisation inside a `#[target_feature]`
/// function, so the body is vectorised for that instruction set; `FMA` says
/// whether `mul_add` may be used (it is a slow libm call without the feature).
///
/// The form `=> $body[vector bytes]` also passes the width of the ISA's
/// vector registers, `$body::<T, FMA, BYTES>` with `BYTES` 16 (SSE2), 32
/// (AVX2) or 64 (AVX-512), for bodies that block their loops by hand so that
/// their accumulators fit the register file.
macro_rules! multiversion {
    (
        $vis:vis fn $name:ident<$t:ident: $bound:path>($($arg:ident: $ty:ty),* $(,)?) => $body:ident
    ) => {
        $crate::ops::simd::multiversion!(@emit $vis fn $name<$t: $bound>($($arg: $ty),*)
            => $body, [true], [true], [false]);
    };
    (
        $vis:vis fn $name:ident<$t:ident: $bound:path>($($arg:ident: $ty:ty),* $(,)?) => $body:ident[vector bytes]
    ) => {
        $crate::ops::simd::multiversion!(@emit $vis fn $name<$t: $bound>($($arg: $ty),*)
            => $body, [true, 64], [true, 32], [false, 16]);
    };
    (
        @emit $vis:vis fn $name:ident<$t:ident: $bound:path>($($arg:ident: $ty:ty),*)
            => $body:ident, [$($c512:tt)*], [$($c256:tt)*], [$($cbase:tt)*]
    ) => {
        $vis fn $name<$t: $bound>(isa: $crate::ops::simd::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2<$t: $bound>($($arg: $ty),*) {
                $body::<$t, $($c256)*>($($arg),*);
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            fn avx512<$t: $bound>($($arg: $ty),*) {
                $body::<$t, $($c512)*>($($arg),*);
            }
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `isa` comes from `Isa::detect`/`Isa::available`, which
                // checked at run time that this CPU supports these features.
                $crate::ops::simd::Isa::Avx512 => unsafe { avx512::<$t>($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, AVX2 and FMA were detected.
                $crate::ops::simd::Isa::Avx2Fma => unsafe { avx2::<$t>($($arg),*) },
                _ => $body::<$t, $($cbase)*>($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_always_available_and_detect_is_the_best() {
        let all = Isa::available();
        assert_eq!(all[0], Isa::Baseline);
        assert_eq!(*all.last().unwrap(), Isa::detect());
    }
}
