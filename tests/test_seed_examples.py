"""Seed 000's usage examples 5.1 to 5.7, run as written, with the claims each one makes."""

from __future__ import annotations

import numpy as np

from geneattn import GeneformerInterface, ScKGBERTInterface, rank_value_encode
from geneattn.testing import reference as ref


def test_5_1_rank_value_encoding():
    expression = np.array([0.0, 5.0, 1.0, 10.0, 3.0])
    ranked = rank_value_encode(expression)
    assert ranked.tolist() == [3, 1, 4, 2]
    assert ranked.dtype == np.int64
    medians = np.array([10.0, 0.1, 1.0, 5.0, 0.5])
    ranked_weighted = rank_value_encode(expression, medians)
    # gene 1 has a low median, so a high weight: it moves to the front (50 vs 6, 2, 1)
    assert ranked_weighted.tolist() == [1, 4, 3, 2]
    assert ranked_weighted.tolist().index(1) < ranked.tolist().index(1)


def test_5_2_cell_type_prediction():
    model = ScKGBERTInterface(d_model=64, n_genes=200, sigma=1.0, seed=42)
    rng = np.random.default_rng(0)
    neuron_expr = rng.poisson(5, 200).astype(np.float64)
    glia_expr = rng.poisson(1, 200).astype(np.float64)
    proto_neuron = model.encode_with_knowledge(neuron_expr)
    proto_glia = model.encode_with_knowledge(glia_expr)
    prototypes = np.array([proto_neuron, proto_glia])
    labels = ["neuron", "glia"]
    query = rng.poisson(4, 200).astype(np.float64)
    cell_type = model.predict_cell_type(query, prototypes, labels)
    assert isinstance(cell_type, str) and cell_type in labels
    z = ref.encode_with_knowledge(model, query)
    assert cell_type == labels[int(np.argmin(np.linalg.norm(prototypes - z, axis=1)))]
    # a prototype classifies its own cell
    assert model.predict_cell_type(glia_expr, prototypes, labels) == "glia"
    assert model.predict_cell_type(neuron_expr, prototypes, labels) == "neuron"


def test_5_3_gene_importance():
    model = ScKGBERTInterface(d_model=64, n_genes=500, sigma=1.0, seed=42)
    expression = np.random.default_rng(1).poisson(3, 500).astype(np.float64)
    importance = model.gene_importance(expression)
    assert importance.shape == (500,)
    top_genes = np.argsort(-importance)[:10]
    assert np.all(expression[top_genes] > 0)
    assert np.all(importance[expression == 0] == 0)
    np.testing.assert_allclose(importance, ref.gene_importance(model, expression), rtol=1e-9)


def test_5_4_s_encoder_vs_dual_encoder():
    model = ScKGBERTInterface(d_model=64, n_genes=100, sigma=1.0, seed=42)
    expr = np.random.default_rng(7).poisson(3, 100).astype(np.float64)
    s_embedding = model.encode_expression(expr)
    fused_embedding = model.encode_with_knowledge(expr)
    distance = np.linalg.norm(s_embedding - fused_embedding)
    assert s_embedding.shape == fused_embedding.shape == (64,)
    assert distance > 0  # the K-encoder adds the PPI neighbourhood
    np.testing.assert_allclose(s_embedding, ref.encode_expression(model, expr), rtol=1e-9)
    np.testing.assert_allclose(fused_embedding, ref.encode_with_knowledge(model, expr), rtol=1e-9)


def test_5_5_cell_embedding():
    model = GeneformerInterface(d_model=256, n_genes=2000, n_heads=4, seed=42)
    expression = np.random.default_rng(0).poisson(3, 2000).astype(np.float64)
    cell_embedding = model.encode_cell(expression)
    assert cell_embedding.shape == (256,)
    np.testing.assert_allclose(cell_embedding, ref.encode_cell(model, expression), rtol=1e-9)


def test_5_6_masked_gene_prediction():
    model = GeneformerInterface(d_model=128, n_genes=500, n_heads=4, seed=42)
    expression = np.random.default_rng(5).poisson(3, 500).astype(np.float64)
    mask, true_ids, predicted_ids = model.predict_masked_genes(expression, rng_seed=42)
    n_correct = (true_ids == predicted_ids).sum()
    n_total = len(true_ids)
    n = int((expression > 0).sum())
    assert n_total == max(1, int(0.15 * n)) == mask.sum()
    assert 0 <= n_correct <= n_total
    want = ref.predict_masked_genes(model, expression, rng_seed=42)
    for a, b in zip((mask, true_ids, predicted_ids), want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_5_7_gene_network_attention():
    model = GeneformerInterface(d_model=64, n_genes=100, n_heads=4, seed=42)
    expression = np.random.default_rng(3).poisson(2, 100).astype(np.float64)
    attn_matrix = model.gene_network_attention(expression)
    n = int((expression > 0).sum())
    assert attn_matrix.shape == (n, n)
    row_sums = attn_matrix.sum(axis=1)
    np.testing.assert_allclose(row_sums, 1.0, atol=1e-12)
    col_sums = attn_matrix.sum(axis=0)
    hub_genes = np.argsort(-col_sums)[:5]
    assert hub_genes.shape == (5,) and len(set(hub_genes.tolist())) == 5
    np.testing.assert_allclose(
        attn_matrix, ref.gene_network_attention(model, expression), rtol=1e-9
    )
