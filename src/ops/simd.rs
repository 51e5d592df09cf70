//! Run-time choice of the instruction set the row kernels are compiled for.
//!
//! The wheel targets baseline x86-64, so each hot row function is compiled a
//! second and third time inside `#[target_feature]` wrappers (AVX2+FMA and
//! AVX-512) and the best one the CPU supports is picked once, at run time.
//! `target-cpu=native` is never used: the wheel must run on any x86-64 CPU.
//!
//! # Forcing a lower level: `CNNRS_SIMD`
//!
//! The environment variable `CNNRS_SIMD` caps the level, so that an AVX-512
//! machine can measure and test the AVX2 (or baseline) kernels an older CPU
//! would run: `avx512`, `avx2` (or `avx2+fma`, the name [`Isa::name`] prints)
//! and `baseline`, in any case. It is read once, by the first
//! [`Isa::detect`], and can only lower the level: asking for more than the
//! CPU supports gives what the CPU supports (running AVX-512 code on a CPU
//! without it would crash). An empty or unset variable changes nothing; any
//! other value is ignored with a one-line warning on stderr (the detected
//! level is used), because the variable is read inside a kernel call that has
//! no way to raise an error, and a crash for a typo in a tuning switch would
//! be worse. [`Isa::detect`]'s `name()` (`cnnrs._core._simd_isa()` from
//! Python) tells which level is in force.

use std::sync::OnceLock;

/// An instruction set a row kernel can be compiled for, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Whatever the build target guarantees (SSE2 on x86-64); no FMA.
    Baseline,
    /// AVX2 with fused multiply-add (Haswell, Zen and later).
    Avx2Fma,
    /// AVX-512 F/VL/BW/DQ with FMA (Skylake-SP, Ice Lake, Zen 4 and later).
    Avx512,
}

impl Isa {
    /// The instruction set the kernels run: the best this CPU supports,
    /// capped by `CNNRS_SIMD` (see the [module docs](self)); decided once.
    #[must_use]
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let setting = std::env::var("CNNRS_SIMD").ok();
            match Isa::capped(Isa::supported(), setting.as_deref()) {
                Ok(isa) => isa,
                Err(bad) => {
                    eprintln!(
                        "cnnrs: ignoring CNNRS_SIMD={bad:?}: expected avx512, avx2 or \
                         baseline; using {}",
                        Isa::supported().name()
                    );
                    Isa::supported()
                }
            }
        })
    }

    /// The best instruction set this CPU supports, ignoring `CNNRS_SIMD`.
    fn supported() -> Isa {
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
    }

    /// The level to run on a CPU that supports `best` when `CNNRS_SIMD` is
    /// `setting`: the lower of the two; `best` for an unset or empty setting.
    ///
    /// # Errors
    /// The setting itself when it names no level.
    fn capped(best: Isa, setting: Option<&str>) -> Result<Isa, &str> {
        let wanted = match setting.map(str::trim) {
            None | Some("") => return Ok(best),
            Some(s) if s.eq_ignore_ascii_case("avx512") => Isa::Avx512,
            Some(s) if s.eq_ignore_ascii_case("avx2") || s.eq_ignore_ascii_case("avx2+fma") => {
                Isa::Avx2Fma
            }
            Some(s) if s.eq_ignore_ascii_case("baseline") => Isa::Baseline,
            Some(s) => return Err(s),
        };
        Ok(wanted.min(best))
    }

    /// Every instruction set up to [`Isa::detect`]'s (so `CNNRS_SIMD` caps it
    /// too), baseline first, for tests that check each compiled path against
    /// the baseline one.
    #[must_use]
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Baseline, Isa::Avx2Fma, Isa::Avx512]
            .into_iter()
            .filter(|isa| *isa <= best)
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
        assert!(Isa::detect() <= Isa::supported());
    }

    #[test]
    fn cnnrs_simd_only_lowers_the_level() {
        use Isa::{Avx2Fma, Avx512, Baseline};
        for best in [Baseline, Avx2Fma, Avx512] {
            assert_eq!(Isa::capped(best, None), Ok(best));
            assert_eq!(Isa::capped(best, Some("")), Ok(best));
            assert_eq!(Isa::capped(best, Some("baseline")), Ok(Baseline));
            // never above what the CPU supports
            assert_eq!(Isa::capped(best, Some("avx512")), Ok(best));
        }
        assert_eq!(Isa::capped(Avx512, Some("avx2")), Ok(Avx2Fma));
        assert_eq!(Isa::capped(Avx512, Some(" AVX2+FMA ")), Ok(Avx2Fma));
        assert_eq!(Isa::capped(Baseline, Some("avx2")), Ok(Baseline));
        assert_eq!(Isa::capped(Avx512, Some("avx")), Err("avx"));
        assert_eq!(Isa::capped(Avx512, Some("sse4")), Err("sse4"));
        // the name a level prints reads back as that level
        for isa in [Baseline, Avx2Fma, Avx512] {
            assert_eq!(Isa::capped(Avx512, Some(isa.name())), Ok(isa));
        }
    }
}
