//! The feed-forward activations of Hugging Face BERT configs (`hidden_act`), in place.
//!
//! Each is a branch-free elementwise loop compiled with AVX2+FMA when the CPU has it
//! ([`crate::simd_fn!`]), so it vectorises; the copy is chosen per CPU, never per thread.

use crate::error::KernelResult;
use crate::kerr;
use crate::real::Real;

/// The activation of the intermediate (feed-forward) layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)` (`relu`; Geneformer V1 and V2).
    Relu,
    /// `x Phi(x) = x (1 + erf(x / sqrt 2)) / 2` (`gelu`, PyTorch's exact GELU).
    Gelu,
    /// `x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2` (`gelu_new`, `gelu_pytorch_tanh`,
    /// `gelu_fast`).
    GeluTanh,
    /// `x / (1 + exp(-x))` (`silu`, `swish`).
    Silu,
}

impl Activation {
    /// The activation of a config's `hidden_act` name.
    pub fn from_name(name: &str) -> KernelResult<Self> {
        match name {
            "relu" => Ok(Self::Relu),
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "silu" | "swish" => Ok(Self::Silu),
            other => Err(kerr!(
                "unsupported hidden_act {other:?}: expected relu, gelu, gelu_new, \
                 gelu_pytorch_tanh, gelu_fast, silu or swish"
            )),
        }
    }

    /// Applies the activation to every element of `x`.
    pub fn apply(self, x: &mut [f32]) {
        match self {
            Self::Relu => relu(x),
            Self::Gelu => gelu_erf(x),
            Self::GeluTanh => gelu_tanh(x),
            Self::Silu => silu(x),
        }
    }
}

/// `erf(x)` to within a few ulp of f32: a rational minimax approximation on `[-4, 4]`
/// (erf is 1 to f32 precision beyond), odd numerator of degree 13 over an even denominator
/// of degree 8 (the coefficients of Eigen's `generic_fast_erf_float`). Branch free.
#[inline(always)]
fn erf_approx<T: Real, const FMA: bool>(x: T) -> T {
    let four = T::from_f64(4.0);
    let x = x.max_of(-four);
    let x = if x < four { x } else { four };
    let x2 = x * x;
    let mut p = x2.madd::<FMA>(
        T::from_f64(-2.726_142_258_013_06e-10),
        T::from_f64(2.770_681_424_959_02e-8),
    );
    p = x2.madd::<FMA>(p, T::from_f64(-2.101_024_020_825_08e-6));
    p = x2.madd::<FMA>(p, T::from_f64(-5.692_506_394_623_46e-5));
    p = x2.madd::<FMA>(p, T::from_f64(-7.349_906_303_268_55e-4));
    p = x2.madd::<FMA>(p, T::from_f64(-2.954_599_808_540_25e-3));
    p = x2.madd::<FMA>(p, T::from_f64(-1.609_603_332_624_15e-2));
    p = x * p;
    let mut q = x2.madd::<FMA>(
        T::from_f64(-1.456_607_184_649_96e-5),
        T::from_f64(-2.133_740_552_789_05e-4),
    );
    q = x2.madd::<FMA>(q, T::from_f64(-1.682_826_974_382_03e-3));
    q = x2.madd::<FMA>(q, T::from_f64(-7.373_329_167_204_68e-3));
    q = x2.madd::<FMA>(q, T::from_f64(-1.426_473_905_141_89e-2));
    p / q
}

/// `tanh(y)` from one `exp` of a non-positive argument: `sign(y) (1 - e) / (1 + e)` with
/// `e = exp(-2 |y|)`.
#[inline(always)]
fn tanh_approx<T: Real, const FMA: bool>(y: T) -> T {
    let a = y.max_of(-y);
    let e = (-(a + a)).exp_nonpos::<FMA>();
    let t = (T::ONE - e) / (T::ONE + e);
    if y < T::ZERO {
        -t
    } else {
        t
    }
}

crate::simd_fn! {
    fn relu<T: Real>(x: &mut [T]) {
        for v in x.iter_mut() {
            *v = v.max_of(T::ZERO);
        }
    }
}

crate::simd_fn! {
    fn gelu_erf<T: Real>(x: &mut [T]) {
        let half = T::from_f64(0.5);
        let inv_sqrt2 = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
        for v in x.iter_mut() {
            let a = *v;
            *v = half * a * (T::ONE + erf_approx::<T, FMA>(a * inv_sqrt2));
        }
    }
}

crate::simd_fn! {
    fn gelu_tanh<T: Real>(x: &mut [T]) {
        let half = T::from_f64(0.5);
        let c = T::from_f64((2.0 / std::f64::consts::PI).sqrt());
        let k = T::from_f64(0.044_715);
        for v in x.iter_mut() {
            let a = *v;
            let inner = c * (a + k * a * a * a);
            *v = half * a * (T::ONE + tanh_approx::<T, FMA>(inner));
        }
    }
}

crate::simd_fn! {
    fn silu<T: Real>(x: &mut [T]) {
        for v in x.iter_mut() {
            let a = *v;
            // sigmoid from exp(-|a|): 1 / (1 + e) for a >= 0, e / (1 + e) below
            let e = (-a.max_of(-a)).exp_nonpos::<FMA>();
            let s = if a < T::ZERO { e } else { T::ONE } / (T::ONE + e);
            *v = a * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64: its Taylor series up to |x| = 3 (cancellation costs < 1e-12 there),
    /// beyond that 1 - erfc from the asymptotic series (truncation error < 1e-9).
    fn erf64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let (a, z) = (x.abs(), 1.0 / (2.0 * x * x));
            let series = 1.0 - z + 3.0 * z * z - 15.0 * z.powi(3) + 105.0 * z.powi(4);
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series;
            return x.signum() * (1.0 - erfc);
        }
        let (mut term, mut sum, x2) = (x, x, x * x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-18 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid() -> Vec<f32> {
        (-6000..=6000).map(|i| i as f32 * 2e-3).collect()
    }

    fn max_err(act: Activation, exact: impl Fn(f64) -> f64) -> f64 {
        let xs = grid();
        let mut y = xs.clone();
        act.apply(&mut y);
        xs.iter()
            .zip(&y)
            .map(|(&x, &v)| {
                let want = exact(x as f64);
                (v as f64 - want).abs() / want.abs().max(1.0)
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn erf_matches_series() {
        for &x in &grid() {
            let got = erf_approx::<f32, false>(x) as f64;
            assert!((got - erf64(x as f64)).abs() < 1e-6, "erf({x}) = {got}");
        }
        assert!((erf64(1.0) - 0.842_700_792_949_714_9).abs() < 1e-12);
    }

    #[test]
    fn activations_match_their_formulas() {
        assert_eq!(max_err(Activation::Relu, |x| x.max(0.0)), 0.0);
        let gelu = |x: f64| 0.5 * x * (1.0 + erf64(x / 2f64.sqrt()));
        assert!(max_err(Activation::Gelu, gelu) < 2e-6);
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let tanh_gelu = |x: f64| 0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh());
        assert!(max_err(Activation::GeluTanh, tanh_gelu) < 2e-6);
        assert!(max_err(Activation::Silu, |x| x / (1.0 + (-x).exp())) < 2e-6);
    }

    #[test]
    fn extreme_inputs_stay_finite() {
        for act in [
            Activation::Relu,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Silu,
        ] {
            let mut x = [-1e30f32, -200.0, -0.0, 0.0, 200.0, 1e30];
            act.apply(&mut x);
            assert!(x.iter().all(|v| v.is_finite()), "{act:?}: {x:?}");
            assert_eq!(x[5], 1e30, "{act:?} keeps large positive inputs");
            assert!(
                x[0].abs() < 1e-6,
                "{act:?} sends large negative inputs to 0"
            );
        }
    }

    #[test]
    fn names_are_parsed() {
        assert_eq!(Activation::from_name("relu").unwrap(), Activation::Relu);
        assert_eq!(
            Activation::from_name("gelu_pytorch_tanh").unwrap(),
            Activation::GeluTanh
        );
        assert!(Activation::from_name("tanh")
            .unwrap_err()
            .0
            .contains("unsupported hidden_act \"tanh\""));
    }
}
