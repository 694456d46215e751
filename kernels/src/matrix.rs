//! Borrowed dense matrices, a safe GEMM over them, and ragged token lists.

use crate::error::KernelResult;
use crate::kerr;
use crate::real::Real;

/// A row-major matrix borrowed from a slice.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
}

impl<'a, T: Real> Mat<'a, T> {
    /// Wraps `data` as `rows x cols`; `name` is used in the error messages.
    pub fn new(name: &str, data: &'a [T], rows: usize, cols: usize) -> KernelResult<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(kerr!(
                "{name} has {} elements, not {rows} x {cols}",
                data.len()
            ));
        }
        Ok(Self { data, rows, cols })
    }

    /// Row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The whole matrix as a strided view.
    pub fn view(&self) -> View<'a, T> {
        View::rowmajor(self.data, self.rows, self.cols)
    }

    /// Refuses NaN and infinity, naming the matrix.
    pub fn check_finite(&self, name: &str) -> KernelResult<()> {
        if let Some(pos) = self.data.iter().position(|x| !x.is_finite()) {
            return Err(kerr!(
                "{name} has a non-finite value at row {}, column {}",
                pos / self.cols.max(1),
                pos % self.cols.max(1)
            ));
        }
        Ok(())
    }

    /// Refuses a matrix without columns.
    pub fn check_has_cols(&self, name: &str) -> KernelResult<()> {
        if self.cols == 0 {
            return Err(kerr!("{name} must have at least one column"));
        }
        Ok(())
    }
}

/// A read-only strided matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A contiguous row-major matrix.
    pub fn rowmajor(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Columns `c0..c1`.
    pub fn cols(self, c0: usize, c1: usize) -> Self {
        assert!(c0 <= c1 && c1 <= self.cols, "column range out of bounds");
        let data = if c1 > c0 {
            &self.data[c0 * self.cs..]
        } else {
            &self.data[..0]
        };
        Self {
            data,
            cols: c1 - c0,
            ..self
        }
    }

    /// Rows `r0..r1`.
    pub fn rows(self, r0: usize, r1: usize) -> Self {
        assert!(r0 <= r1 && r1 <= self.rows, "row range out of bounds");
        let data = if r1 > r0 {
            &self.data[r0 * self.rs..]
        } else {
            &self.data[..0]
        };
        Self {
            data,
            rows: r1 - r0,
            ..self
        }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// A mutable strided matrix, for GEMM output.
#[derive(Debug)]
pub struct ViewMut<'a, T> {
    pub data: &'a mut [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
}

impl<'a, T> ViewMut<'a, T> {
    /// A contiguous row-major matrix.
    pub fn rowmajor(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
        }
    }

    /// Columns `c0..c1` of a matrix whose rows are `rs` apart.
    pub fn cols_of(data: &'a mut [T], rows: usize, rs: usize, c0: usize, c1: usize) -> Self {
        assert!(c0 <= c1 && c1 <= rs, "column range out of bounds");
        let data = if c1 > c0 {
            &mut data[c0..]
        } else {
            &mut data[..0]
        };
        Self {
            data,
            rows,
            cols: c1 - c0,
            rs,
        }
    }
}

/// `c <- alpha a b + beta c`. Panics only on a shape bug inside this crate.
pub fn gemm<T: Real>(alpha: T, a: View<'_, T>, b: View<'_, T>, beta: T, c: ViewMut<'_, T>) {
    assert!(
        a.cols == b.rows && a.rows == c.rows && b.cols == c.cols,
        "gemm shapes do not match"
    );
    assert!(a.in_bounds() && b.in_bounds(), "gemm operand out of bounds");
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    assert!(
        (c.rows - 1) * c.rs + c.cols - 1 < c.data.len() && c.rs >= c.cols,
        "gemm output out of bounds"
    );
    if a.cols == 0 {
        for i in 0..c.rows {
            for x in &mut c.data[i * c.rs..i * c.rs + c.cols] {
                *x = if beta == T::ZERO { T::ZERO } else { *x * beta };
            }
        }
        return;
    }
    // SAFETY: every index the GEMM touches was bounds-checked above; C's rows do not
    // overlap (rs >= cols), and C is a unique borrow so it aliases neither A nor B.
    // gemm computes dst <- alpha dst + beta (lhs rhs), reading dst only when asked.
    unsafe {
        gemm::gemm(
            c.rows,
            c.cols,
            a.cols,
            c.data.as_mut_ptr(),
            1,
            c.rs as isize,
            beta != T::ZERO,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A token id type the batched kernels accept (numpy int32 or int64).
pub trait TokenId: Copy + Send + Sync {
    fn get(self) -> i64;
}

impl TokenId for i32 {
    #[inline(always)]
    fn get(self) -> i64 {
        self as i64
    }
}

impl TokenId for i64 {
    #[inline(always)]
    fn get(self) -> i64 {
        self
    }
}

/// Ragged token lists: cell `c` holds `tokens[offsets[c]..offsets[c + 1]]`.
#[derive(Debug, Clone, Copy)]
pub struct Ragged<'a, I> {
    pub tokens: &'a [I],
    pub offsets: &'a [i64],
}

impl<I: TokenId> Ragged<'_, I> {
    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Token ids of cell `c` (call [`Ragged::validate`] first).
    #[inline]
    pub fn cell(&self, c: usize) -> &[I] {
        &self.tokens[self.offsets[c] as usize..self.offsets[c + 1] as usize]
    }

    /// Checks offsets and that every token is a row of a table with `vocab` rows.
    pub fn validate(&self, vocab: usize) -> KernelResult<()> {
        if self.offsets.is_empty() {
            return Err(kerr!("offsets must have at least one entry (n_cells + 1)"));
        }
        if self.offsets[0] != 0 {
            return Err(kerr!("offsets must start at 0, got {}", self.offsets[0]));
        }
        if self.offsets.windows(2).any(|w| w[1] < w[0]) {
            return Err(kerr!("offsets must be non-decreasing"));
        }
        let last = self.offsets[self.offsets.len() - 1];
        if last as usize != self.tokens.len() {
            return Err(kerr!(
                "offsets end at {last} but there are {} tokens",
                self.tokens.len()
            ));
        }
        if let Some(bad) = self
            .tokens
            .iter()
            .map(|t| t.get())
            .find(|&t| t < 0 || t as usize >= vocab)
        {
            return Err(kerr!("token {bad} is outside the table's rows 0..{vocab}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_naive_with_transpose_and_column_slices() {
        let a: Vec<f64> = (0..12).map(|x| x as f64 * 0.5 - 2.0).collect(); // 3 x 4
        let b: Vec<f64> = (0..20).map(|x| (x as f64).sin()).collect(); // 5 x 4
        let mut c = vec![0.0; 3 * 5];
        let av = View::rowmajor(&a, 3, 4);
        let bv = View::rowmajor(&b, 5, 4);
        gemm(1.0, av, bv.t(), 0.0, ViewMut::rowmajor(&mut c, 3, 5));
        for i in 0..3 {
            for j in 0..5 {
                let want: f64 = (0..4).map(|p| a[i * 4 + p] * b[j * 4 + p]).sum();
                assert!((c[i * 5 + j] - want).abs() < 1e-12);
            }
        }
        // columns 1..3 of A times rows 1..3 of B^T, written into columns 2..4 of a 3 x 6
        let mut out = vec![7.0; 18];
        gemm(
            1.0,
            av.cols(1, 3),
            bv.t().rows(1, 3).cols(0, 2),
            0.0,
            ViewMut::cols_of(&mut out, 3, 6, 2, 4),
        );
        for i in 0..3 {
            for j in 0..6 {
                let got = out[i * 6 + j];
                if (2..4).contains(&j) {
                    let jj = j - 2;
                    let want: f64 = (1..3).map(|p| a[i * 4 + p] * b[jj * 4 + p]).sum();
                    assert!((got - want).abs() < 1e-12);
                } else {
                    assert_eq!(got, 7.0);
                }
            }
        }
    }

    #[test]
    fn gemm_accumulates_with_beta() {
        let a = [1.0f32, 2.0, 3.0, 4.0]; // 2 x 2
        let mut c = [1.0f32, 1.0, 1.0, 1.0];
        let v = View::rowmajor(&a, 2, 2);
        gemm(2.0, v, v, 0.5, ViewMut::rowmajor(&mut c, 2, 2));
        assert_eq!(
            c,
            [
                0.5 + 2.0 * 7.0,
                0.5 + 2.0 * 10.0,
                0.5 + 2.0 * 15.0,
                0.5 + 2.0 * 22.0
            ]
        );
    }

    #[test]
    fn ragged_validation() {
        let toks = [0i32, 2, 1];
        let ok = Ragged {
            tokens: &toks,
            offsets: &[0, 2, 2, 3],
        };
        assert!(ok.validate(3).is_ok());
        assert_eq!(ok.cell(1).len(), 0);
        assert!(ok.validate(2).unwrap_err().0.contains("token 2"));
        let bad = Ragged {
            tokens: &toks,
            offsets: &[0, 2, 1, 3],
        };
        assert!(bad.validate(3).is_err());
        let short = Ragged {
            tokens: &toks,
            offsets: &[0, 2],
        };
        assert!(short
            .validate(3)
            .unwrap_err()
            .0
            .contains("offsets end at 2"));
    }

    #[test]
    fn mat_shape_is_checked() {
        assert!(Mat::new("x", &[1.0f32; 6], 2, 3).is_ok());
        assert!(Mat::new("x", &[1.0f32; 6], 4, 2)
            .unwrap_err()
            .0
            .contains("x has 6"));
    }
}
