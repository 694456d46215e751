//! The two float types the kernels run on, behind one trait.
//!
//! Besides arithmetic the trait gives each kernel what it needs from the type: a branch-free
//! `exp` for arguments `<= 0` (the only ones a max-subtracted softmax produces) that LLVM can
//! vectorise.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// `f32` or `f64`.
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    /// Added to every softmax denominator (seed 000, appendix A.4).
    const TINY: Self;
    /// Largest finite value.
    const MAX: Self;
    /// Name of the numpy dtype, for messages.
    const DTYPE: &'static str;

    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;

    /// `self` if it is larger, else `other`; compiles to a vector max.
    #[inline(always)]
    fn max_of(self, other: Self) -> Self {
        if self > other {
            self
        } else {
            other
        }
    }

    fn is_finite(self) -> bool;

    /// `self * b + c`, fused into one rounding when `FMA` (use it only in code compiled
    /// with the `fma` target feature, where it is one instruction).
    fn madd<const FMA: bool>(self, b: Self, c: Self) -> Self;

    /// `exp(self)` for `self <= 0`, to within a few ulp; exactly 0 below the smallest
    /// normal result, 1 at 0. Branch free, so loops over it vectorise. `FMA` selects fused
    /// multiply-adds (see [`Real::madd`]).
    fn exp_nonpos<const FMA: bool>(self) -> Self;
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const TINY: Self = 1e-30;
    const MAX: Self = f64::MAX;
    const DTYPE: &'static str = "float64";

    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline(always)]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }

    #[inline(always)]
    fn madd<const FMA: bool>(self, b: Self, c: Self) -> Self {
        if FMA {
            self.mul_add(b, c)
        } else {
            self * b + c
        }
    }

    #[inline(always)]
    fn exp_nonpos<const FMA: bool>(self) -> Self {
        // exp(x) = 2^n e^r with n = round(x / ln 2), |r| <= ln2 / 2 (Cody-Waite split of
        // ln 2); e^r = 1 + r + r^2 u(r) with u a minimax polynomial of degree 10 (the
        // coefficients of SLEEF's double-precision exp; max relative error 1.2e-16 on the
        // interval, checked in the tests below).
        const LOG2E: f64 = std::f64::consts::LOG2_E;
        const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000); // 0.693147180369123816490
        const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76); // 1.90821492927058770002e-10
        const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: rounds to an integer
        const LOWEST: f64 = -708.0; // exp(-708) is still a normal double
        let x = self.max_of(LOWEST);
        let t = x.madd::<FMA>(LOG2E, SHIFT);
        let n = t - SHIFT;
        let n_int = (t.to_bits() as i64).wrapping_sub(SHIFT.to_bits() as i64);
        let r = (-n).madd::<FMA>(LN2_HI, x);
        let r = (-n).madd::<FMA>(LN2_LO, r);
        let mut u = 2.088606211072837e-09;
        u = u.madd::<FMA>(r, 2.5111293089287652e-08);
        u = u.madd::<FMA>(r, 2.7557391123490047e-07);
        u = u.madd::<FMA>(r, 2.7557236291192883e-06);
        u = u.madd::<FMA>(r, 2.4801587159235473e-05);
        u = u.madd::<FMA>(r, 0.0001984126989605092);
        u = u.madd::<FMA>(r, 0.001388888888897745);
        u = u.madd::<FMA>(r, 0.008333333333316527);
        u = u.madd::<FMA>(r, 0.041666666666666505);
        u = u.madd::<FMA>(r, 0.16666666666666685);
        u = u.madd::<FMA>(r, 0.5);
        let p = (r * r).madd::<FMA>(u, r) + 1.0;
        let scale = f64::from_bits((n_int.wrapping_add(1023) as u64) << 52);
        if self < LOWEST {
            0.0
        } else {
            p * scale
        }
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const TINY: Self = 1e-30;
    const MAX: Self = f32::MAX;
    const DTYPE: &'static str = "float32";

    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }

    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }

    #[inline(always)]
    fn madd<const FMA: bool>(self, b: Self, c: Self) -> Self {
        if FMA {
            self.mul_add(b, c)
        } else {
            self * b + c
        }
    }

    #[inline(always)]
    fn exp_nonpos<const FMA: bool>(self) -> Self {
        // As for f64, with a degree-7 polynomial (truncation < 6e-9 relative).
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = f32::from_bits(0x3F31_8000); // 0.693359375
        const LN2_LO: f32 = f32::from_bits(0xB95E_8083); // -2.12194440e-4
        const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
        const LOWEST: f32 = -87.0;
        let x = self.max_of(LOWEST);
        let t = x.madd::<FMA>(LOG2E, SHIFT);
        let n = t - SHIFT;
        let n_int = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
        let r = (-n).madd::<FMA>(LN2_HI, x);
        let r = (-n).madd::<FMA>(LN2_LO, r);
        let mut p = 1.0 / 5_040.0;
        p = p.madd::<FMA>(r, 1.0 / 720.0);
        p = p.madd::<FMA>(r, 1.0 / 120.0);
        p = p.madd::<FMA>(r, 1.0 / 24.0);
        p = p.madd::<FMA>(r, 1.0 / 6.0);
        p = p.madd::<FMA>(r, 0.5);
        p = p.madd::<FMA>(r, 1.0);
        p = p.madd::<FMA>(r, 1.0);
        let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
        if self < LOWEST {
            0.0
        } else {
            p * scale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_rel_err<T: Real>(lo: f64, steps: usize) -> f64 {
        let mut worst: f64 = 0.0;
        for i in 0..=steps {
            let x = lo * i as f64 / steps as f64;
            let xt = T::from_f64(x);
            let exact = xt.to_f64().exp();
            let got = xt.exp_nonpos::<false>().to_f64();
            let fused = xt.exp_nonpos::<true>().to_f64();
            worst = worst.max(((fused - exact) / exact.max(1e-300)).abs());
            if exact > 1e-300 {
                worst = worst.max(((got - exact) / exact).abs());
            }
        }
        worst
    }

    #[test]
    fn exp_f64_is_accurate() {
        assert!(max_rel_err::<f64>(-700.0, 200_000) < 4e-16);
        assert_eq!(0.0f64.exp_nonpos::<false>(), 1.0);
        assert_eq!((-800.0f64).exp_nonpos::<false>(), 0.0);
        assert_eq!(f64::MIN.exp_nonpos::<false>(), 0.0);
    }

    #[test]
    fn exp_f32_is_accurate() {
        assert!(max_rel_err::<f32>(-86.0, 200_000) < 3e-7);
        assert_eq!(0.0f32.exp_nonpos::<false>(), 1.0);
        assert_eq!((-100.0f32).exp_nonpos::<false>(), 0.0);
        assert_eq!(f32::MIN.exp_nonpos::<false>(), 0.0);
    }
}
