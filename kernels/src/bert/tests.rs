//! The encoder against a straight f64 transcription of the Hugging Face formulas.

use super::*;

fn data(len: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * scale) as f32
        })
        .collect()
}

/// Owned weights of a random model (`nn.Linear` layout, qkv stacked).
pub(crate) struct Owned {
    pub vocab: usize,
    max_pos: usize,
    pub d: usize,
    inter: usize,
    pub heads: usize,
    act: Activation,
    emb: [Vec<f32>; 5],
    layers: Vec<[Vec<f32>; 12]>,
}

impl Owned {
    pub fn new(
        seed: u64,
        n_layers: usize,
        d: usize,
        heads: usize,
        inter: usize,
        act: Activation,
    ) -> Self {
        let (vocab, max_pos) = (23, 320);
        let mut k = seed * 1000;
        let mut next = |len: usize, scale: f64| {
            k += 1;
            data(len, k, scale)
        };
        let ln = |v: Vec<f32>| v.iter().map(|x| 1.0 + x).collect::<Vec<f32>>();
        let emb = [
            next(vocab * d, 2.0),
            next(max_pos * d, 0.5),
            next(d, 0.5),
            ln(next(d, 0.4)),
            next(d, 0.2),
        ];
        let w = 2.0 / (d as f64).sqrt();
        let layers = (0..n_layers)
            .map(|_| {
                [
                    next(3 * d * d, 2.0 * w),
                    next(3 * d, 0.2),
                    next(d * d, w),
                    next(d, 0.2),
                    ln(next(d, 0.4)),
                    next(d, 0.2),
                    next(inter * d, w),
                    next(inter, 0.2),
                    next(d * inter, 2.0 / (inter as f64).sqrt()),
                    next(d, 0.2),
                    ln(next(d, 0.4)),
                    next(d, 0.2),
                ]
            })
            .collect();
        Self {
            vocab,
            max_pos,
            d,
            inter,
            heads,
            act,
            emb,
            layers,
        }
    }

    pub fn model(&self) -> Bert<'_> {
        fn lin<'a>(w: &'a [f32], b: &'a [f32], rows: usize, cols: usize) -> Linear<'a> {
            Linear {
                w: Mat::new("w", w, rows, cols).unwrap(),
                b,
            }
        }
        let d = self.d;
        Bert {
            embeddings: Embeddings {
                word: Mat::new("word", &self.emb[0], self.vocab, d).unwrap(),
                position: Mat::new("pos", &self.emb[1], self.max_pos, d).unwrap(),
                token_type: &self.emb[2],
                norm: Norm {
                    gamma: &self.emb[3],
                    beta: &self.emb[4],
                },
            },
            layers: self
                .layers
                .iter()
                .map(|l| Layer {
                    qkv: lin(&l[0], &l[1], 3 * d, d),
                    attn_out: lin(&l[2], &l[3], d, d),
                    attn_norm: Norm {
                        gamma: &l[4],
                        beta: &l[5],
                    },
                    ffn_in: lin(&l[6], &l[7], self.inter, d),
                    ffn_out: lin(&l[8], &l[9], d, self.inter),
                    out_norm: Norm {
                        gamma: &l[10],
                        beta: &l[11],
                    },
                })
                .collect(),
            n_heads: self.heads,
            activation: self.act,
            eps: 1e-12,
            attention: AttentionMode::Dense,
        }
    }
}

fn linear64(x: &[f64], w: &[f32], b: &[f32], n: usize, inp: usize, out: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * out];
    for i in 0..n {
        for o in 0..out {
            y[i * out + o] = b[o] as f64
                + (0..inp)
                    .map(|p| x[i * inp + p] * w[o * inp + p] as f64)
                    .sum::<f64>();
        }
    }
    y
}

fn layernorm64(x: &mut [f64], g: &[f32], b: &[f32], eps: f64) {
    let d = g.len();
    for row in x.chunks_mut(d) {
        let m = row.iter().sum::<f64>() / d as f64;
        let v = row.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / d as f64;
        for j in 0..d {
            row[j] = (row[j] - m) / (v + eps).sqrt() * g[j] as f64 + b[j] as f64;
        }
    }
}

fn act64(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Relu => x.max(0.0),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Gelu => panic!("not used in these tests"),
    }
}

/// Hidden states 0..=L and per-layer per-head attention `(H, n, n)` of one cell, in f64.
pub(crate) fn naive(m: &Owned, tokens: &[i64]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (n, d, h) = (tokens.len(), m.d, m.heads);
    let dh = d / h;
    let mut x = vec![0.0; n * d];
    for (i, &t) in tokens.iter().enumerate() {
        for j in 0..d {
            x[i * d + j] = m.emb[0][t as usize * d + j] as f64
                + m.emb[1][i * d + j] as f64
                + m.emb[2][j] as f64;
        }
    }
    layernorm64(&mut x, &m.emb[3], &m.emb[4], 1e-12);
    let mut hidden = vec![x.clone()];
    let mut atts = Vec::new();
    for l in &m.layers {
        let qkv = linear64(&x, &l[0], &l[1], n, d, 3 * d);
        let mut ctx = vec![0.0; n * d];
        let mut att = vec![0.0; h * n * n];
        for hh in 0..h {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh)
                            .map(|p| {
                                qkv[i * 3 * d + hh * dh + p] * qkv[j * 3 * d + d + hh * dh + p]
                            })
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                let tot: f64 = e.iter().sum();
                for j in 0..n {
                    let w = e[j] / tot;
                    att[hh * n * n + i * n + j] = w;
                    for p in 0..dh {
                        ctx[i * d + hh * dh + p] += w * qkv[j * 3 * d + 2 * d + hh * dh + p];
                    }
                }
            }
        }
        let a = linear64(&ctx, &l[2], &l[3], n, d, d);
        let mut x1: Vec<f64> = x.iter().zip(&a).map(|(p, q)| p + q).collect();
        layernorm64(&mut x1, &l[4], &l[5], 1e-12);
        let mut inter = linear64(&x1, &l[6], &l[7], n, d, m.inter);
        for v in inter.iter_mut() {
            *v = act64(m.act, *v);
        }
        let o = linear64(&inter, &l[8], &l[9], n, m.inter, d);
        x = x1.iter().zip(&o).map(|(p, q)| p + q).collect();
        layernorm64(&mut x, &l[10], &l[11], 1e-12);
        hidden.push(x.clone());
        atts.push(att);
    }
    (hidden, atts)
}

fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - b).abs() <= tol * (1.0 + b.abs()),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

pub(crate) fn cells_of(lens: &[usize], vocab: usize, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut tokens = Vec::new();
    let mut offsets = vec![0i64];
    let r = data(lens.iter().sum(), seed, 1.0);
    let mut k = 0;
    for &n in lens {
        for _ in 0..n {
            tokens.push((((r[k] as f64 + 0.5) * vocab as f64) as i64).clamp(0, vocab as i64 - 1));
            k += 1;
        }
        offsets.push(tokens.len() as i64);
    }
    (tokens, offsets)
}

#[test]
fn matches_the_formulas_for_every_layer_and_head() {
    // lengths around the attention block (128), the long-cell threshold and dense block
    // (256)
    let lens = [0, 1, 5, 128, 129, 257];
    for (seed, act) in [
        (1, Activation::Relu),
        (2, Activation::GeluTanh),
        (3, Activation::Silu),
    ] {
        let m = Owned::new(seed, 2, 8, 2, 12, act);
        let model = m.model();
        let (tokens, offsets) = cells_of(&lens, m.vocab, seed);
        let cells = Ragged {
            tokens: &tokens,
            offsets: &offsets,
        };
        let wanted = Wanted {
            hidden: vec![0, 1, 2],
            pool: Some(Pool {
                layer: 2,
                mode: PoolMode::Mean {
                    skip_first: 1,
                    skip_last: 1,
                },
            }),
            attention: vec![0, 1],
            per_head: true,
        };
        let out = bert_forward(cells, &model, &wanted, 2).unwrap();
        for c in 0..lens.len() {
            let toks = cells.cell(c);
            let (hid, att) = naive(&m, toks);
            let (a, b) = (offsets[c] as usize * m.d, offsets[c + 1] as usize * m.d);
            for (k, want) in hid.iter().enumerate() {
                close(&out.hidden[k][a..b], want, 2e-5, "hidden");
            }
            let (a0, a1) = (out.attention_offsets[c], out.attention_offsets[c + 1]);
            for (l, want) in att.iter().enumerate() {
                close(&out.attention[l][a0..a1], want, 2e-5, "attention");
            }
            let n = toks.len();
            let pooled = &out.pooled.as_ref().unwrap()[c * m.d..(c + 1) * m.d];
            if n <= 2 {
                assert!(pooled.iter().all(|&v| v == 0.0));
            } else {
                let mean: Vec<f64> = (0..m.d)
                    .map(|j| (1..n - 1).map(|i| hid[2][i * m.d + j]).sum::<f64>() / (n - 2) as f64)
                    .collect();
                close(pooled, &mean, 2e-5, "pooled");
            }
        }
    }
}

#[test]
fn head_average_and_cls_pooling() {
    let m = Owned::new(4, 2, 12, 3, 16, Activation::Relu);
    let model = m.model();
    let (tokens, offsets) = cells_of(&[7, 0, 3], m.vocab, 9);
    let cells = Ragged {
        tokens: &tokens,
        offsets: &offsets,
    };
    let wanted = Wanted {
        pool: Some(Pool {
            layer: 1,
            mode: PoolMode::First,
        }),
        attention: vec![1],
        ..Wanted::default()
    };
    let out = bert_forward(cells, &model, &wanted, 1).unwrap();
    for c in [0, 2] {
        let (hid, att) = naive(&m, cells.cell(c));
        let n = cells.cell(c).len();
        let avg: Vec<f64> = (0..n * n)
            .map(|i| (0..3).map(|h| att[1][h * n * n + i]).sum::<f64>() / 3.0)
            .collect();
        let (a0, a1) = (out.attention_offsets[c], out.attention_offsets[c + 1]);
        close(&out.attention[0][a0..a1], &avg, 2e-5, "averaged attention");
        let pooled = &out.pooled.as_ref().unwrap()[c * m.d..(c + 1) * m.d];
        close(pooled, &hid[1][..m.d], 2e-5, "first token");
    }
    let empty = &out.pooled.as_ref().unwrap()[m.d..2 * m.d];
    assert!(empty.iter().all(|&v| v == 0.0));
    assert_eq!(out.attention_offsets, vec![0, 49, 49, 58]);
}

#[test]
fn threads_and_batching_do_not_change_a_bit() {
    let m = Owned::new(5, 3, 16, 4, 24, Activation::GeluTanh);
    let model = m.model();
    let lens = [300, 3, 0, 270, 40, 1, 129];
    let (tokens, offsets) = cells_of(&lens, m.vocab, 11);
    let cells = Ragged {
        tokens: &tokens,
        offsets: &offsets,
    };
    let wanted = Wanted {
        hidden: vec![3, 1],
        pool: Some(Pool {
            layer: 2,
            mode: PoolMode::Mean {
                skip_first: 0,
                skip_last: 0,
            },
        }),
        attention: vec![2],
        per_head: false,
    };
    let one = bert_forward(cells, &model, &wanted, 1).unwrap();
    for threads in [2, 3] {
        assert_eq!(one, bert_forward(cells, &model, &wanted, threads).unwrap());
    }
    for c in 0..lens.len() {
        let toks = cells.cell(c);
        let single = [0, toks.len() as i64];
        let alone = Ragged {
            tokens: toks,
            offsets: &single,
        };
        let o = bert_forward(alone, &model, &wanted, 2).unwrap();
        let (a, b) = (offsets[c] as usize * m.d, offsets[c + 1] as usize * m.d);
        assert_eq!(o.hidden[0], one.hidden[0][a..b]);
        assert_eq!(o.hidden[1], one.hidden[1][a..b]);
        let pooled = one.pooled.as_ref().unwrap();
        assert_eq!(o.pooled.unwrap(), pooled[c * m.d..(c + 1) * m.d]);
        let (a0, a1) = (one.attention_offsets[c], one.attention_offsets[c + 1]);
        assert_eq!(o.attention[0], one.attention[0][a0..a1]);
    }
}

#[test]
fn stopping_early_gives_the_same_states() {
    let m = Owned::new(6, 3, 8, 2, 8, Activation::Relu);
    let model = m.model();
    let (tokens, offsets) = cells_of(&[9, 4], m.vocab, 3);
    let cells = Ragged {
        tokens: &tokens,
        offsets: &offsets,
    };
    let want = |hidden: Vec<usize>| Wanted {
        hidden,
        ..Wanted::default()
    };
    assert_eq!(want(vec![1]).layers_to_run(3).unwrap(), 1);
    let early = bert_forward(cells, &model, &want(vec![1]), 1).unwrap();
    let full = bert_forward(cells, &model, &want(vec![3, 1]), 1).unwrap();
    assert_eq!(early.hidden[0], full.hidden[1]);
    let nothing = bert_forward(cells, &model, &Wanted::default(), 1).unwrap();
    assert!(nothing.hidden.is_empty() && nothing.pooled.is_none());
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    let m = Owned::new(7, 2, 8, 2, 8, Activation::Relu);
    let model = m.model();
    let (tokens, offsets) = cells_of(&[4], m.vocab, 1);
    let cells = Ragged {
        tokens: &tokens,
        offsets: &offsets,
    };
    let err = |wanted: &Wanted, model: &Bert<'_>, cells: Ragged<'_, i64>| {
        bert_forward(cells, model, wanted, 1).unwrap_err().0
    };
    let w = |hidden: Vec<usize>, attention: Vec<usize>| Wanted {
        hidden,
        attention,
        ..Wanted::default()
    };
    assert!(err(&w(vec![3], vec![]), &model, cells).contains("hidden state 3 does not exist"));
    assert!(err(&w(vec![], vec![2]), &model, cells).contains("attention layer 2"));
    assert!(err(&w(vec![1, 1], vec![]), &model, cells).contains("distinct"));
    let bad_tok = [0i64, 1, 99];
    let off = [0i64, 3];
    let bad = Ragged {
        tokens: &bad_tok,
        offsets: &off,
    };
    assert!(err(&w(vec![0], vec![]), &model, bad).contains("token 99"));
    let (long, long_off) = cells_of(&[m.max_pos + 1], m.vocab, 2);
    let too_long = Ragged {
        tokens: &long,
        offsets: &long_off,
    };
    assert!(err(&w(vec![0], vec![]), &model, too_long).contains("only 320 positions"));
    let mut heads = model.clone();
    heads.n_heads = 3;
    assert!(err(&w(vec![0], vec![]), &heads, cells).contains("multiple of the number of heads"));
    let mut short_bias = model.clone();
    short_bias.layers[1].ffn_in.b = &m.layers[1][7][..5];
    assert!(err(&w(vec![0], vec![]), &short_bias, cells).contains("layer 1 intermediate bias"));
    let nan = vec![f32::NAN; 3 * m.d * m.d];
    let mut with_nan = model.clone();
    with_nan.layers[0].qkv.w = Mat::new("w", &nan, 3 * m.d, m.d).unwrap();
    assert!(err(&w(vec![0], vec![]), &with_nan, cells).contains("non-finite"));
}
