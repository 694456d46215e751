//! The GenoHoption core against dense f64 transcriptions of the seed's equations: the
//! diffusion matrix as a sum of matrix powers (eqs. 5 to 7, truncated as eqs. 9 and 11),
//! and the aggregation by its definition.

use super::aggregate::{
    mha_genohoption_aggregate_cells, mha_genohoption_module_cells, mha_genohoption_pool_cells,
};
use super::perturb::mha_genohoption_edit_effects;
use super::*;
use crate::aggregate::tests::{modules_of, naive_add, naive_modules};
use crate::aggregate::{ModuleSumsMut, SumsMut, Universe};
use crate::matrix::{Mat, Ragged};
use crate::multihead::Heads;
use crate::perturb::Edits;
use crate::testdata::data;

fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * m];
    for i in 0..n {
        for p in 0..k {
            for j in 0..m {
                c[i * m + j] += a[i * k + p] * b[p * m + j];
            }
        }
    }
    c
}

/// Dense adjacency (with the kernel's rule: an empty row is a self-loop).
fn dense_adjacency(g: &CellGraph) -> Vec<bool> {
    let n = g.n();
    let mut adj = vec![false; n * n];
    for i in 0..n {
        for &j in g.row(i) {
            adj[i * n + j as usize] = true;
        }
    }
    adj
}

/// Edge softmax of one head as a dense `n x n` matrix.
fn dense_softmax(
    q: &[f64],
    k: &[f64],
    adj: &[bool],
    n: usize,
    d: usize,
    h: usize,
    dh: usize,
) -> Vec<f64> {
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        let s: Vec<f64> = (0..n)
            .map(|j| {
                if !adj[i * n + j] {
                    return f64::NEG_INFINITY;
                }
                (0..dh)
                    .map(|p| q[i * d + h * dh + p] * k[j * d + h * dh + p])
                    .sum::<f64>()
                    / (dh as f64).sqrt()
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|&v| (v - mx).exp()).collect();
        let tot: f64 = e.iter().sum();
        for j in 0..n {
            a[i * n + j] = e[j] / tot;
        }
    }
    a
}

/// `sum_k theta_k A^k` by matrix powers.
fn dense_diffusion(a: &[f64], n: usize, params: &Params) -> Vec<f64> {
    let theta = params.coefficients();
    let mut power: Vec<f64> = (0..n * n).map(|i| f64::from(i / n == i % n)).collect();
    let mut m = vec![0.0; n * n];
    for (k, &th) in theta.iter().enumerate() {
        if k > 0 {
            power = matmul(&power, a, n, n, n);
        }
        for (x, &p) in m.iter_mut().zip(&power) {
            *x += th * p;
        }
    }
    m
}

/// (output `n x d`, per-head diffusion matrices) of one cell, densely.
#[allow(clippy::too_many_arguments)]
fn naive(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    g: &CellGraph,
    n: usize,
    d: usize,
    heads: usize,
    p: &Params,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let dh = d / heads;
    let adj = dense_adjacency(g);
    let mut out = vec![0.0; n * d];
    let mut ms = Vec::new();
    for h in 0..heads {
        let a = dense_softmax(q, k, &adj, n, d, h, dh);
        let m = dense_diffusion(&a, n, p);
        for i in 0..n {
            for j in 0..n {
                for c in 0..dh {
                    out[i * d + h * dh + c] += m[i * n + j] * v[j * d + h * dh + c];
                }
            }
        }
        ms.push(m);
    }
    (out, ms)
}

fn close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

/// A random graph over `n` positions (about `density` of the pairs, some rows empty).
fn random_graph(n: usize, density: f64, seed: u64) -> CellGraph {
    let r = data(n * n, seed, 1.0);
    let mut indptr = vec![0i64];
    let mut indices = Vec::new();
    for i in 0..n {
        for j in 0..n {
            if r[i * n + j] + 0.5 < density {
                indices.push(j as i64);
            }
        }
        indptr.push(indices.len() as i64);
    }
    CellGraph::from_csr(&indptr, &indices, n).unwrap()
}

fn all_params() -> Vec<Params> {
    let mut out = Vec::new();
    for k in [0, 1, 2, 6] {
        out.push(Params::from_name("ppr", 0.25, 5.0, k).unwrap());
        out.push(Params::from_name("heat", 0.25, 5.0, k).unwrap());
    }
    out.push(Params::from_name("ppr", 1.0, 5.0, 3).unwrap());
    out.push(Params::from_name("heat", 0.25, 0.7, 9).unwrap());
    out
}

#[test]
fn coefficients_are_the_seeds() {
    let p = Params::from_name("ppr", 0.25, 5.0, 6).unwrap();
    let c = p.coefficients();
    assert_eq!(c.len(), 7);
    assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    assert!((c[0] - 0.25).abs() < 1e-15 && (c[6] - 0.75f64.powi(6)).abs() < 1e-15);
    let h = Params::from_name("heat", 0.25, 5.0, 6)
        .unwrap()
        .coefficients();
    for (k, &x) in h.iter().enumerate() {
        let fact: f64 = (1..=k).map(|i| i as f64).product();
        assert!((x - (-5.0f64).exp() * 5.0f64.powi(k as i32) / fact).abs() < 1e-15);
    }
    // sum_(k<=6) e^-5 5^k / k! = 0.762
    assert!((h.iter().sum::<f64>() - 0.7621834).abs() < 1e-6);
}

#[test]
fn bad_parameters_are_refused() {
    for (name, alpha, t, k, want) in [
        ("ppr", 0.0, 5.0, 6, "alpha"),
        ("ppr", 1.5, 5.0, 6, "alpha"),
        ("ppr", f64::NAN, 5.0, 6, "alpha"),
        ("heat", 0.25, 0.0, 6, "t must"),
        ("heat", 0.25, f64::INFINITY, 6, "t must"),
        ("heat", 0.25, 5.0, MAX_ITERATIONS + 1, "iterations"),
        ("pagerank", 0.25, 5.0, 6, "diffusion must"),
    ] {
        let e = Params::from_name(name, alpha, t, k).unwrap_err();
        assert!(e.0.contains(want), "{e}");
    }
}

#[test]
fn seq2graph_restricts_the_prior_to_the_cell() {
    // prior over 6 tokens: 0-1, 1-2, 2-3 (both ways), 4 -> 0 only, 5 isolated, 3 -> 3 (diag)
    let indptr = [0i64, 1, 3, 5, 7, 8, 8];
    let indices = [1i64, 0, 2, 1, 3, 2, 3, 0];
    let prior = Prior {
        indptr: &indptr,
        indices: &indices,
    };
    prior.validate(6, "token").unwrap();
    // cell: 2, 0, 4, 1, 2 (repeated), 5, 3
    let tokens = [2i32, 0, 4, 1, 2, 5, 3];
    let mut g = CellGraph::default();
    let mut s = GraphScratch::default();
    g.build(&tokens, &prior, &mut s);
    let rows: Vec<Vec<u32>> = (0..tokens.len()).map(|i| g.row(i).to_vec()).collect();
    let want: Vec<Vec<u32>> = vec![
        vec![0, 3, 6],    // 2 -> 1 (pos 3), 3 (pos 6), itself
        vec![1, 3],       // 0 -> 1
        vec![1, 2],       // 4 -> 0
        vec![0, 1, 3, 4], // 1 -> 0, 2 (pos 0 and 4)
        vec![3, 4, 6],    // the repeated 2: not linked to the other 2
        vec![5],          // 5: no neighbours, self-loop only
        vec![0, 4, 6],    // 3 -> 2 (twice); its diagonal entry is ignored
    ];
    assert_eq!(rows, want);
    assert_eq!(g.n_edges(), want.iter().map(Vec::len).sum::<usize>());
    // the scratch is reset: a second cell builds the same as a fresh scratch
    let other = [3i64, 1, 0];
    let mut g2 = CellGraph::default();
    g2.build(&other, &prior, &mut s);
    let mut g3 = CellGraph::default();
    g3.build(&other, &prior, &mut GraphScratch::default());
    assert_eq!(g2, g3);
    assert_eq!(g2.row(1), &[1, 2]);
    // a bad prior is refused
    let bad = Prior {
        indptr: &indptr,
        indices: &[1i64, 0, 2, 1, 3, 2, 3, 6],
    };
    assert!(bad
        .validate(6, "token")
        .unwrap_err()
        .0
        .contains("indices[7] = 6"));
    assert!(prior.validate(7, "token").unwrap_err().0.contains("indptr"));
}

#[test]
fn attention_matches_matrix_powers() {
    for (case, &(n, d, heads, density)) in [
        (1, 4, 2, 0.5),
        (7, 6, 3, 0.3),
        (40, 8, 2, 0.15),
        (65, 4, 1, 0.05),
    ]
    .iter()
    .enumerate()
    {
        let case = case as u64;
        let (q, k, v) = (
            data(n * d, 10 + case, 3.0),
            data(n * d, 20 + case, 3.0),
            data(n * d, 30 + case, 2.0),
        );
        let g = random_graph(n, density, 40 + case);
        for p in all_params() {
            let (want, ms) = naive(&q, &k, &v, &g, n, d, heads, &p);
            let r = genohoption_attention(&q, &k, &v, (n, d), heads, &g, &p, true, 2).unwrap();
            close(&r.output, &want, 1e-12, "output");
            close(r.weights.as_ref().unwrap(), &ms.concat(), 1e-12, "weights");
            // thread count and parallel heads do not change a bit
            let one = genohoption_attention(&q, &k, &v, (n, d), heads, &g, &p, true, 1).unwrap();
            assert_eq!(one, r);
        }
    }
}

#[test]
fn a_cell_without_tokens_is_no_error() {
    let g = CellGraph::from_csr(&[0], &[], 0).unwrap();
    let p = Params::from_name("ppr", 0.25, 5.0, 6).unwrap();
    let r = genohoption_attention::<f64>(&[], &[], &[], (0, 4), 2, &g, &p, true, 2).unwrap();
    assert!(r.output.is_empty() && r.weights.unwrap().is_empty());
    let mut s = LayerScratch::default();
    let mut att: Vec<f32> = Vec::new();
    s.layer(&[], (0, 4, 2), &p, Some(&mut att), false, true, &mut []);
    s.layer(&[], (0, 4, 2), &p, Some(&mut att), true, false, &mut []);
}

#[test]
fn a_node_without_neighbours_keeps_its_value() {
    // rows 0 and 2 empty: they become self-loops
    let g = CellGraph::from_csr(&[0, 0, 2, 2, 3], &[0, 3, 1], 4).unwrap();
    assert_eq!(g.row(0), &[0]);
    assert_eq!(g.row(2), &[2]);
    let (n, d) = (4, 2);
    let (q, k, v) = (data(8, 1, 2.0), data(8, 2, 2.0), data(8, 3, 2.0));
    let p = Params::from_name("ppr", 0.25, 5.0, 6).unwrap();
    let r = genohoption_attention(&q, &k, &v, (n, d), 1, &g, &p, false, 1).unwrap();
    for i in [0, 2] {
        close(
            &r.output[i * d..(i + 1) * d],
            &v[i * d..(i + 1) * d],
            1e-15,
            "kept",
        );
    }
    // heat scales it by the truncated series' sum
    let p = Params::from_name("heat", 0.25, 5.0, 6).unwrap();
    let s: f64 = p.coefficients().iter().sum();
    let r = genohoption_attention(&q, &k, &v, (n, d), 1, &g, &p, false, 1).unwrap();
    let want: Vec<f64> = v[..d].iter().map(|x| x * s).collect();
    close(&r.output[..d], &want, 1e-14, "heat");
}

#[test]
fn bad_inputs_are_refused() {
    let g = random_graph(3, 0.5, 1);
    let p = Params::from_name("ppr", 0.25, 5.0, 6).unwrap();
    let x = data(6, 1, 1.0);
    let e = genohoption_attention(&x, &x, &x[..4], (3, 2), 1, &g, &p, false, 1).unwrap_err();
    assert!(e.0.contains("values must be 3 x 2"));
    let e = genohoption_attention(&x, &x, &x, (3, 2), 3, &g, &p, false, 1).unwrap_err();
    assert!(e.0.contains("n_heads"));
    let mut nan = x.clone();
    nan[3] = f64::NAN;
    let e = genohoption_attention(&nan, &x, &x, (3, 2), 1, &g, &p, false, 1).unwrap_err();
    assert!(e
        .0
        .contains("queries has a non-finite value at row 1, column 1"));
    let g4 = random_graph(4, 0.5, 1);
    let e = genohoption_attention(&x, &x, &x, (3, 2), 1, &g4, &p, false, 1).unwrap_err();
    assert!(e.0.contains("4 positions"));
    let e = CellGraph::from_csr(&[0, 1, 1], &[2], 2).unwrap_err();
    assert!(e.0.contains("graph indices[0] = 2"));
}

/// A study-model case: token table, projections, prior, cells, universe.
struct Case {
    vocab: usize,
    d: usize,
    h: usize,
    table: Vec<f64>,
    wq: Vec<f64>,
    wk: Vec<f64>,
    wv: Vec<f64>,
    indptr: Vec<i64>,
    indices: Vec<i64>,
    tokens: Vec<i32>,
    offsets: Vec<i64>,
    index: Vec<i64>,
    g: usize,
}

impl Case {
    fn new() -> Self {
        let (vocab, d, h) = (60, 6, 2);
        // prior: token t linked (both ways) to t + 1, t + 3 and t + 7 (mod vocab), token 59 none
        let mut rows: Vec<Vec<i64>> = vec![Vec::new(); vocab];
        for t in 0..vocab - 1 {
            for step in [1, 3, 7] {
                let u = (t + step) % (vocab - 1);
                if u != t {
                    rows[t].push(u as i64);
                    rows[u].push(t as i64);
                }
            }
        }
        let mut indptr = vec![0i64];
        let mut indices = Vec::new();
        for r in &mut rows {
            r.sort_unstable();
            r.dedup();
            indices.extend_from_slice(r);
            indptr.push(indices.len() as i64);
        }
        // cells of 0, 1, 70 (repeats) and 9 tokens (with the isolated 59)
        let mut tokens: Vec<i32> = vec![5];
        tokens.extend((0..70).map(|i| ((i * 7 + 3) % vocab) as i32));
        tokens.extend([59, 4, 8, 1, 2, 3, 11, 12, 40]);
        let offsets = vec![0, 0, 1, 71, 80];
        let mut index = vec![-1i64; vocab];
        let mut g = 0;
        for t in (0..vocab).step_by(2).rev() {
            index[t] = g;
            g += 1;
        }
        Self {
            vocab,
            d,
            h,
            table: data(vocab * d, 3, 3.0),
            wq: data(d * d, 4, 2.0),
            wk: data(d * d, 5, 2.0),
            wv: data(d * d, 6, 2.0),
            indptr,
            indices,
            tokens,
            offsets,
            index,
            g: g as usize,
        }
    }

    fn heads(&self) -> Heads<'_, f64> {
        Heads {
            w_q: Mat::new("w_q", &self.wq, self.d, self.d).unwrap(),
            w_k: Mat::new("w_k", &self.wk, self.d, self.d).unwrap(),
            w_v: Some(Mat::new("w_v", &self.wv, self.d, self.d).unwrap()),
            n_heads: self.h,
        }
    }

    fn gh(&self, p: Params) -> GenoHoption<'_> {
        GenoHoption {
            prior: Prior {
                indptr: &self.indptr,
                indices: &self.indices,
            },
            params: p,
        }
    }

    fn table(&self) -> Mat<'_, f64> {
        Mat::new("table", &self.table, self.vocab, self.d).unwrap()
    }

    fn universe(&self) -> Universe<'_> {
        Universe {
            index: &self.index,
            n: self.g,
        }
    }

    fn cell(&self, c: usize) -> &[i32] {
        &self.tokens[self.offsets[c] as usize..self.offsets[c + 1] as usize]
    }

    /// The naive output and head-averaged diffusion matrix of cell `c`.
    fn naive_cell(&self, c: usize, p: &Params) -> (Vec<f64>, Vec<f64>) {
        self.naive_tokens(self.cell(c), p)
    }

    /// The naive output and head-averaged diffusion matrix of a token list.
    fn naive_tokens(&self, toks: &[i32], p: &Params) -> (Vec<f64>, Vec<f64>) {
        self.naive_scaled(toks, p, None)
    }

    /// [`Case::naive_tokens`] with value row `i` scaled by `scale[i]`.
    fn naive_scaled(
        &self,
        toks: &[i32],
        p: &Params,
        scale: Option<&[f64]>,
    ) -> (Vec<f64>, Vec<f64>) {
        let n = toks.len();
        let x: Vec<f64> = toks
            .iter()
            .flat_map(|&t| self.table[t as usize * self.d..(t as usize + 1) * self.d].to_vec())
            .collect();
        let (q, k, v) = (
            matmul(&x, &self.wq, n, self.d, self.d),
            matmul(&x, &self.wk, n, self.d, self.d),
            matmul(&x, &self.wv, n, self.d, self.d),
        );
        let mut v = v;
        if let Some(w) = scale {
            for (row, &f) in v.chunks_exact_mut(self.d).zip(w) {
                row.iter_mut().for_each(|x| *x *= f);
            }
        }
        let mut g = CellGraph::default();
        g.build(toks, &self.gh(*p).prior, &mut GraphScratch::default());
        let (out, ms) = naive(&q, &k, &v, &g, n, self.d, self.h, p);
        let mean = (0..n * n)
            .map(|i| ms.iter().map(|m| m[i]).sum::<f64>() / self.h as f64)
            .collect();
        (out, mean)
    }

    fn sums(&self, p: Params, cells: std::ops::Range<usize>, n_threads: usize, out: SumsMut<'_>) {
        let offs = &self.offsets[cells.start..=cells.end];
        let base = offs[0];
        let shifted: Vec<i64> = offs.iter().map(|o| o - base).collect();
        let ragged = Ragged {
            tokens: &self.tokens[base as usize..*offs.last().unwrap() as usize],
            offsets: &shifted,
        };
        mha_genohoption_aggregate_cells(
            ragged,
            self.table(),
            self.heads(),
            self.gh(p),
            self.universe(),
            out,
            n_threads,
        )
        .unwrap();
    }

    fn ragged(&self) -> Ragged<'_, i32> {
        Ragged {
            tokens: &self.tokens,
            offsets: &self.offsets,
        }
    }
}

#[test]
fn pooled_cells_are_the_mean_of_the_outputs() {
    let c = Case::new();
    for p in [
        Params::from_name("ppr", 0.25, 5.0, 6).unwrap(),
        Params::from_name("heat", 0.25, 5.0, 3).unwrap(),
    ] {
        let pooled =
            mha_genohoption_pool_cells(c.ragged(), c.table(), c.heads(), c.gh(p), false, 2)
                .unwrap();
        assert!(pooled[..c.d].iter().all(|&x| x == 0.0));
        for cell in 1..4 {
            let (out, _) = c.naive_cell(cell, &p);
            let n = c.cell(cell).len();
            let mean: Vec<f64> = (0..c.d)
                .map(|j| (0..n).map(|i| out[i * c.d + j]).sum::<f64>() / n as f64)
                .collect();
            close(
                &pooled[cell * c.d..(cell + 1) * c.d],
                &mean,
                1e-12,
                "pooled",
            );
        }
        let one = mha_genohoption_pool_cells(c.ragged(), c.table(), c.heads(), c.gh(p), false, 1)
            .unwrap();
        assert_eq!(one, pooled);
    }
}

#[test]
fn sums_match_the_definition_and_are_bit_identical() {
    let c = Case::new();
    for p in [
        Params::from_name("ppr", 0.25, 5.0, 6).unwrap(),
        Params::from_name("heat", 0.25, 5.0, 5).unwrap(),
    ] {
        let (mut want, mut want_inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
        for cell in 0..4 {
            let (_, m) = c.naive_cell(cell, &p);
            naive_add(&m, c.cell(cell), &c.index, c.g, &mut want, &mut want_inc);
        }
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            let (mut sums, mut inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
            let out = SumsMut {
                sums: &mut sums,
                incoming: &mut inc,
            };
            c.sums(p, 0..4, threads, out);
            results.push((sums, inc));
        }
        close(&results[0].0, &want, 1e-12, "sums");
        close(&results[0].1, &want_inc, 1e-12, "incoming");
        assert!(want.iter().any(|&x| x > 0.0));
        let (mut sums, mut inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
        for cells in [0..2, 2..4] {
            let out = SumsMut {
                sums: &mut sums,
                incoming: &mut inc,
            };
            c.sums(p, cells, 2, out);
        }
        results.push((sums, inc));
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
    }
}

#[test]
fn module_cells_match_the_definition() {
    let c = Case::new();
    let p = Params::from_name("ppr", 0.25, 5.0, 4).unwrap();
    let k = 3;
    let module = modules_of(c.g);
    let run = |threads| {
        let (mut sums, mut pairs) = (vec![7.0; 4 * k], vec![7i64; 4 * k]);
        let out = ModuleSumsMut {
            sums: &mut sums,
            pairs: &mut pairs,
        };
        mha_genohoption_module_cells(
            c.ragged(),
            c.table(),
            c.heads(),
            c.gh(p),
            c.universe(),
            &module,
            k,
            out,
            threads,
        )
        .unwrap();
        (sums, pairs)
    };
    let (sums, pairs) = run(2);
    for cell in 0..4 {
        let (_, m) = c.naive_cell(cell, &p);
        let (want, want_pairs) = naive_modules(&m, c.cell(cell), &c.index, &module, k);
        close(&sums[cell * k..(cell + 1) * k], &want, 1e-12, "module sums");
        assert_eq!(pairs[cell * k..(cell + 1) * k], want_pairs);
    }
    assert!(sums.iter().any(|&x| x > 0.0));
    assert_eq!(run(1), (sums, pairs));
}

#[test]
fn study_kernels_refuse_a_prior_of_the_wrong_size() {
    let c = Case::new();
    let p = Params::from_name("ppr", 0.25, 5.0, 6).unwrap();
    let short = GenoHoption {
        prior: Prior {
            indptr: &c.indptr[..10],
            indices: &c.indices[..c.indptr[9] as usize],
        },
        params: p,
    };
    let e =
        mha_genohoption_pool_cells(c.ragged(), c.table(), c.heads(), short, false, 1).unwrap_err();
    assert!(e
        .0
        .contains("prior indptr must have one entry per table row (60) plus one"));
}

/// Mean of the rows of `x` (`d` columns) but `skip`.
fn mean_rows(x: &[f64], d: usize, skip: &[usize]) -> Vec<f64> {
    let rows: Vec<&[f64]> = x
        .chunks_exact(d)
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(_, r)| r)
        .collect();
    (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / rows.len().max(1) as f64)
        .collect()
}

#[test]
fn edit_effects_equal_encoding_the_edited_cells() {
    let c = Case::new();
    let p = Params::from_name("ppr", 0.25, 5.0, 4).unwrap();
    // cell 3 (9 tokens): delete position 2, overexpress an absent token (drop the last,
    // add 30), move position 5 (nothing removed or added), delete the isolated 59 (pos 0);
    // cell 1 (one token): overexpress 7
    let cell = [1i64, 3, 3, 3, 3];
    let remove = [0i64, 2, 8, -1, 0];
    let add = [7i64, -1, 30, -1, -1];
    let exclude = [-1i64, 2, -1, 5, 0];
    let edits = Edits {
        cell: &cell,
        remove: &remove,
        add: &add,
        exclude: &exclude,
    };
    let (orig, pert) =
        mha_genohoption_edit_effects(c.ragged(), c.table(), c.heads(), c.gh(p), edits, None, 2)
            .unwrap();
    let d = c.d;
    for e in 0..cell.len() {
        let toks = c.cell(cell[e] as usize);
        let (out, _) = c.naive_tokens(toks, &p);
        let excl: Vec<usize> = usize::try_from(exclude[e]).into_iter().collect();
        close(
            &orig[e * d..(e + 1) * d],
            &mean_rows(&out, d, &excl),
            1e-12,
            "original",
        );
        let mut edited: Vec<i32> = Vec::new();
        let mut skip = Vec::new();
        for (i, &t) in toks.iter().enumerate() {
            if i as i64 == remove[e] {
                continue;
            }
            if i as i64 == exclude[e] {
                skip.push(edited.len());
            }
            edited.push(t);
        }
        if add[e] >= 0 {
            skip.push(edited.len());
            edited.push(add[e] as i32);
        }
        let (out, _) = c.naive_tokens(&edited, &p);
        close(
            &pert[e * d..(e + 1) * d],
            &mean_rows(&out, d, &skip),
            1e-12,
            "perturbed",
        );
    }
    let one =
        mha_genohoption_edit_effects(c.ragged(), c.table(), c.heads(), c.gh(p), edits, None, 1)
            .unwrap();
    assert_eq!(one, (orig, pert));
}

#[test]
fn rank_scaled_values_in_pooling_and_edits() {
    use crate::multihead::rank_weight;
    let c = Case::new();
    let p = Params::from_name("heat", 0.25, 2.0, 3).unwrap();
    let d = c.d;
    let weights = |n: usize| -> Vec<f64> { (0..n).map(|i| rank_weight::<f64>(i, n)).collect() };
    let pooled =
        mha_genohoption_pool_cells(c.ragged(), c.table(), c.heads(), c.gh(p), true, 2).unwrap();
    for cell in 1..4 {
        let toks = c.cell(cell);
        let (out, _) = c.naive_scaled(toks, &p, Some(&weights(toks.len())));
        close(
            &pooled[cell * d..(cell + 1) * d],
            &mean_rows(&out, d, &[]),
            1e-12,
            "ranked",
        );
    }
    // cell 3 (9 tokens): move position 2 to 6, delete position 4, overexpress absent 30
    // (drop the last), move position 0 to the front (no change of weight)
    let cell = [3i64, 3, 3, 3];
    let remove = [-1i64, 4, 8, -1];
    let add = [-1i64, -1, 30, -1];
    let exclude = [2i64, 4, -1, 0];
    let moved = [6i64, -1, -1, 0];
    let edits = Edits {
        cell: &cell,
        remove: &remove,
        add: &add,
        exclude: &exclude,
    };
    let gh = c.gh(p);
    let (orig, pert) =
        mha_genohoption_edit_effects(c.ragged(), c.table(), c.heads(), gh, edits, Some(&moved), 2)
            .unwrap();
    let toks = c.cell(3);
    let n = toks.len();
    let w = weights(n);
    let (out, _) = c.naive_scaled(toks, &p, Some(&w));
    for e in 0..cell.len() {
        let excl: Vec<usize> = usize::try_from(exclude[e]).into_iter().collect();
        close(
            &orig[e * d..(e + 1) * d],
            &mean_rows(&out, d, &excl),
            1e-12,
            "original",
        );
        let (edited, scale, skip): (Vec<i32>, Vec<f64>, Vec<usize>) = if moved[e] >= 0 {
            let mut ws = w.clone();
            ws[exclude[e] as usize] = rank_weight::<f64>(moved[e] as usize, n);
            (toks.to_vec(), ws, excl.clone())
        } else {
            let keep: Vec<usize> = (0..n).filter(|&i| i as i64 != remove[e]).collect();
            let mut t: Vec<i32> = keep.iter().map(|&i| toks[i]).collect();
            let mut ws: Vec<f64> = keep.iter().map(|&i| w[i]).collect();
            let mut skip: Vec<usize> = keep
                .iter()
                .position(|&i| i as i64 == exclude[e])
                .into_iter()
                .collect();
            if add[e] >= 0 {
                skip.push(t.len());
                t.push(add[e] as i32);
                ws.push(rank_weight::<f64>(0, n));
            }
            (t, ws, skip)
        };
        let (out2, _) = c.naive_scaled(&edited, &p, Some(&scale));
        close(
            &pert[e * d..(e + 1) * d],
            &mean_rows(&out2, d, &skip),
            1e-12,
            "perturbed",
        );
    }
    // a move to the same weight changes nothing; a move to another weight does
    assert_eq!(pert[3 * d..4 * d], orig[3 * d..4 * d]);
    assert!(pert[..d] != orig[..d]);
    let bad = [9i64, -1, -1, 0];
    let e =
        mha_genohoption_edit_effects(c.ragged(), c.table(), c.heads(), gh, edits, Some(&bad), 1)
            .unwrap_err();
    assert!(e.0.contains("a move to 9"));
}
