//! The checkpoint kernels against the f64 transcription of the encoder in `bert::tests`
//! and the aggregation by its definition.

use super::*;
use crate::aggregate::tests::{modules_of, naive_add, naive_modules};
use crate::bert::tests::{cells_of, naive, Owned};
use crate::bert::Activation;
use crate::matrix::Mat;

/// A random 3-layer model, cells of 0, 1, 5, 70 (two blocks of query rows) and 130 tokens
/// of a 23-token vocabulary (so tokens repeat), and a universe of every other token in
/// scrambled order.
fn setup(heads: usize) -> (Owned, Vec<i64>, Vec<i64>, Vec<i64>, usize) {
    let m = Owned::new(11, 3, 12, heads, 10, Activation::Relu);
    let (tokens, offsets) = cells_of(&[0, 1, 5, 70, 130], m.vocab, 4);
    let mut index = vec![-1i64; m.vocab];
    let mut g = 0;
    for t in (0..m.vocab).step_by(2).rev() {
        index[t] = g;
        g += 1;
    }
    (m, tokens, offsets, index, g as usize)
}

/// Layer `layer`'s attention of one cell averaged over `heads`, in f64.
fn naive_attention(m: &Owned, toks: &[i64], layer: usize, heads: &[usize]) -> Vec<f64> {
    let n = toks.len();
    let (_, att) = naive(m, toks);
    (0..n * n)
        .map(|i| {
            heads
                .iter()
                .map(|&h| att[layer][h * n * n + i])
                .sum::<f64>()
                / heads.len() as f64
        })
        .collect()
}

fn ragged<'a>(tokens: &'a [i64], offsets: &'a [i64]) -> Ragged<'a, i64> {
    Ragged { tokens, offsets }
}

fn sums_of(
    model: &Bert<'_>,
    cells: Ragged<'_, i64>,
    which: LayerHeads<'_>,
    universe: Universe<'_>,
    n_threads: usize,
) -> (Vec<f64>, Vec<f64>) {
    let g = universe.n;
    let (mut sums, mut inc) = (vec![0.0; g * g], vec![0.0; g]);
    let out = SumsMut {
        sums: &mut sums,
        incoming: &mut inc,
    };
    bert_aggregate_cells(cells, model, which, universe, out, n_threads).unwrap();
    (sums, inc)
}

fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

#[test]
fn sums_match_the_definition_for_every_layer_and_head_choice() {
    let (m, tokens, offsets, index, g) = setup(4);
    let model = m.model();
    let cells = ragged(&tokens, &offsets);
    let universe = Universe {
        index: &index,
        n: g,
    };
    for layer in 0..3 {
        for heads in [None, Some(&[2usize][..]), Some(&[3, 0, 1][..])] {
            let which = LayerHeads { layer, heads };
            let (sums, inc) = sums_of(&model, cells, which, universe, 2);
            let chosen: Vec<usize> = heads.map_or((0..4).collect(), |h| h.to_vec());
            let (mut want, mut want_inc) = (vec![0.0; g * g], vec![0.0; g]);
            for c in 0..cells.n_cells() {
                let toks = cells.cell(c);
                let a = naive_attention(&m, toks, layer, &chosen);
                naive_add(&a, toks, &index, g, &mut want, &mut want_inc);
            }
            close(&sums, &want, "sums");
            close(&inc, &want_inc, "incoming");
            assert!(want.iter().any(|&v| v > 0.0));
        }
    }
}

#[test]
fn module_sums_match_the_definition() {
    let (m, tokens, offsets, index, g) = setup(2);
    let model = m.model();
    let cells = ragged(&tokens, &offsets);
    let universe = Universe {
        index: &index,
        n: g,
    };
    let (module, k) = (modules_of(g), 3);
    let n_cells = cells.n_cells();
    for (layer, heads) in [(1, None), (2, Some(&[1usize][..]))] {
        let which = LayerHeads { layer, heads };
        // garbage in the outputs: they are overwritten
        let (mut sums, mut pairs) = (vec![7.0; n_cells * k], vec![7i64; n_cells * k]);
        let out = ModuleSumsMut {
            sums: &mut sums,
            pairs: &mut pairs,
        };
        bert_module_cells(cells, &model, which, universe, &module, k, out, 2).unwrap();
        let chosen: Vec<usize> = heads.map_or(vec![0, 1], |h| h.to_vec());
        for c in 0..n_cells {
            let toks = cells.cell(c);
            let a = naive_attention(&m, toks, layer, &chosen);
            let (want, want_pairs) = naive_modules(&a, toks, &index, &module, k);
            close(&sums[c * k..(c + 1) * k], &want, "module sums");
            assert_eq!(pairs[c * k..(c + 1) * k], want_pairs);
        }
        assert!(sums.iter().any(|&v| v > 0.0) && pairs.iter().any(|&v| v > 0));
    }
}

#[test]
fn bit_identical_across_threads_and_calls() {
    let (m, tokens, offsets, index, g) = setup(2);
    let model = m.model();
    let universe = Universe {
        index: &index,
        n: g,
    };
    let which = LayerHeads {
        layer: 1,
        heads: None,
    };
    let cells = ragged(&tokens, &offsets);
    let first = sums_of(&model, cells, which, universe, 1);
    for threads in [2, 3] {
        assert_eq!(sums_of(&model, cells, which, universe, threads), first);
    }
    // cells 0..3 and 3..5 in two calls, accumulating into the same sums
    let (mut sums, mut inc) = (vec![0.0; g * g], vec![0.0; g]);
    let split = offsets[3];
    let tail: Vec<i64> = offsets[3..].iter().map(|o| o - split).collect();
    let halves = [
        ragged(&tokens[..split as usize], &offsets[..4]),
        ragged(&tokens[split as usize..], &tail),
    ];
    for part in halves {
        let out = SumsMut {
            sums: &mut sums,
            incoming: &mut inc,
        };
        bert_aggregate_cells(part, &model, which, universe, out, 2).unwrap();
    }
    assert_eq!((sums, inc), first);
    let module = modules_of(g);
    let n_cells = cells.n_cells();
    let modules = |threads| {
        let (mut s, mut p) = (vec![0.0; n_cells * 3], vec![0i64; n_cells * 3]);
        let out = ModuleSumsMut {
            sums: &mut s,
            pairs: &mut p,
        };
        bert_module_cells(cells, &model, which, universe, &module, 3, out, threads).unwrap();
        (s, p)
    };
    assert_eq!(modules(1), modules(3));
}

#[test]
fn nothing_after_the_layers_scores_matters() {
    // changing the values, output and feed-forward of the chosen layer, and every later
    // layer, changes no bit of the sums
    let (m, tokens, offsets, index, g) = setup(2);
    let model = m.model();
    let universe = Universe {
        index: &index,
        n: g,
    };
    let which = LayerHeads {
        layer: 1,
        heads: Some(&[1]),
    };
    let cells = ragged(&tokens, &offsets);
    let want = sums_of(&model, cells, which, universe, 2);
    let other = Owned::new(99, 3, 12, 2, 10, Activation::Relu);
    let o = other.model();
    let mut mixed = model.clone();
    let d = m.d;
    mixed.layers[2] = o.layers[2];
    let l1 = &mut mixed.layers[1];
    // keep the query and key rows of the stacked weight, replace the value rows
    let mut qkv: Vec<f32> = l1.qkv.w.data.to_vec();
    qkv[2 * d * d..].copy_from_slice(&o.layers[1].qkv.w.data[2 * d * d..]);
    l1.qkv.w = Mat::new("qkv", &qkv, 3 * d, d).unwrap();
    l1.attn_out = o.layers[1].attn_out;
    l1.attn_norm = o.layers[1].attn_norm;
    l1.ffn_in = o.layers[1].ffn_in;
    l1.ffn_out = o.layers[1].ffn_out;
    l1.out_norm = o.layers[1].out_norm;
    assert_eq!(sums_of(&mixed, cells, which, universe, 2), want);
    // while the layer before does matter
    mixed.layers[0] = o.layers[0];
    assert_ne!(sums_of(&mixed, cells, which, universe, 2), want);
}

#[test]
fn bad_input_is_refused() {
    let (m, tokens, offsets, index, g) = setup(2);
    let model = m.model();
    let cells = ragged(&tokens, &offsets);
    let mut bad_index = index.clone();
    bad_index[3] = g as i64;
    let short = &index[..5];
    let err = |which: LayerHeads<'_>, index: &[i64], n: usize, sums_g: usize| {
        let (mut sums, mut inc) = (vec![0.0; sums_g * sums_g], vec![0.0; sums_g]);
        let out = SumsMut {
            sums: &mut sums,
            incoming: &mut inc,
        };
        let universe = Universe { index, n };
        bert_aggregate_cells(cells, &model, which, universe, out, 1)
            .unwrap_err()
            .0
    };
    let lh = |layer, heads| LayerHeads { layer, heads };
    for (which, index, n, sums_g, want) in [
        (
            lh(3, None),
            &index[..],
            g,
            g,
            "attention layer 3 does not exist",
        ),
        (
            lh(0, Some(&[2usize][..])),
            &index,
            g,
            g,
            "head 2 does not exist",
        ),
        (lh(0, Some(&[1, 1])), &index, g, g, "heads must be distinct"),
        (lh(0, Some(&[])), &index, g, g, "at least one head"),
        (
            lh(0, None),
            short,
            g,
            g,
            "one entry per row of the word embeddings (23)",
        ),
        (lh(0, None), &bad_index, g, g, "universe[3]"),
        (lh(0, None), &index, g, g + 1, "sums must be"),
    ] {
        let e = err(which, index, n, sums_g);
        assert!(e.contains(want), "{e}");
    }
    // a cell longer than the position table
    let (long, long_off) = cells_of(&[321], m.vocab, 1);
    let (mut sums, mut inc) = (vec![0.0; g * g], vec![0.0; g]);
    let out = SumsMut {
        sums: &mut sums,
        incoming: &mut inc,
    };
    let universe = Universe {
        index: &index,
        n: g,
    };
    let e = bert_aggregate_cells(
        ragged(&long, &long_off),
        &model,
        lh(0, None),
        universe,
        out,
        1,
    );
    assert!(e.unwrap_err().0.contains("only 320 positions"));
    // the module outputs are checked like the study model's
    let (mut s, mut p) = (vec![0.0; 4], vec![0i64; 4]);
    let out = ModuleSumsMut {
        sums: &mut s,
        pairs: &mut p,
    };
    let module = modules_of(g);
    let e = bert_module_cells(cells, &model, lh(0, None), universe, &module, 3, out, 1);
    assert!(e.unwrap_err().0.contains("must be 5 x 3"));
}
