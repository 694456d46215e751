"""The whole demo study with ``model.kind: checkpoint``: every rule runs on a checkpoint.

The checkpoint is random (no package ships pretrained weights) but has Geneformer V1's
vocabulary and 2,048 positions, written in numpy by ``save_checkpoint``: what is tested is
that the rules pass the manifest to every stage and that the stages agree with each other,
not what the modules mean.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_runs import prepare_workdir, run_workflow

from geneattn.models.bert_weights import BertConfig, BertWeights, save_checkpoint
from geneattn.resources.load import load_token_dictionary


@pytest.mark.early
def test_demo_study_runs_on_a_checkpoint(tmp_path, resources_dir):
    vocab = max(
        load_token_dictionary(resources_dir / "geneformer_v1/token_dictionary.tsv").values()
    )
    config = BertConfig(
        vocab_size=vocab + 1,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=2048,
        hidden_act="relu",
    )
    save_checkpoint(tmp_path / "gf", config, BertWeights.random(config, seed=0))
    workdir = prepare_workdir(tmp_path / "run", resources_dir)
    study = {
        "study": "checkpoint_demo",
        "model": {
            "kind": "checkpoint",
            "path": str(tmp_path / "gf"),
            "attention_heads": [0, 2],
            "gene_embeddings": True,
        },
        "tokenize": {"custom_attributes": {"source": "condition", "patient": "patient"}},
        "modules": {"permutations": 200},
        "evaluation": {"permutations": 200},
        # a checkpoint in overexpress mode: Geneformer's definitions by default
        "perturb": {
            "hubs_per_module": 1,
            "null_per_bin": 2,
            "mode": "overexpress",
            "gene_shifts": True,
            "geneformer_table": True,
            "summary_stat": "exact_median",
            "groups": [["CD8A", "CD8B"]],
        },
    }
    (workdir / "study.yaml").write_text(yaml.safe_dump(study))
    run_workflow(workdir, "--configfile", "config.yaml", "study.yaml")
    out = workdir / "results" / "checkpoint_demo"
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["version"] == "V1" and manifest["attention_heads"] == [0, 2]
    emb = ad.read_h5ad(out / "embeddings.h5ad")
    assert emb.obsm["X_geneattn"].shape[1] == 16 and emb.uns["geneattn_model"]["layers"] == "2"
    edges = pd.read_csv(out / "network" / "case_edges.tsv", sep="\t")
    assert len(edges) > 0 and np.isfinite(edges.select_dtypes("number")).all().all()
    perturbation = pd.read_csv(out / "perturbation.tsv", sep="\t")
    # Geneformer's cos_sims of an overexpressed gene: below 1, so every shift is positive
    assert len(perturbation) > 0 and (perturbation["mean_cosine_shift"] > 0).all()
    log = (workdir / "logs" / "checkpoint_demo").glob("perturb_[0-9]*.log")
    assert all("shift definition: geneformer" in f.read_text() for f in log)
    geneformer = pd.read_csv(out / "perturbation_geneformer.tsv", sep="\t")
    assert {"Shift_to_goal_end", "Goal_end_vs_random_pval", "Goal_end_FDR"} <= set(geneformer)
    gene_shifts = pd.read_csv(out / "gene_shifts.tsv", sep="\t")
    assert set(gene_shifts["perturbed_gene"]) <= set(perturbation["gene"])
    assert len(gene_shifts) > 0 and gene_shifts["n_detections"].min() >= 1
    groups = pd.read_csv(out / "perturbation_groups.tsv", sep="\t")
    assert groups["group"].tolist() == ["CD8A+CD8B"] and groups["n_cells"].item() > 0
    genes = pd.read_csv(out / "gene_embeddings.tsv", sep="\t")
    assert genes.shape[1] == 3 + 16 and (genes["n"] > 0).all()
    from geneattn.tokenize import load_token_attributes

    attributes = load_token_attributes(out / "tokens.npz")
    assert sorted(attributes) == ["condition", "patient"]
    assert set(attributes["condition"]) == {"Tumor", "NAT"}
    assert (out / "report.html").stat().st_size > 0
