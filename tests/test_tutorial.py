"""docs/tutorial.py runs the demo study from Python, and finds what the workflow finds.

The tutorial runs as a user runs it (``python docs/tutorial.py OUT``) on the fetched demo
data; its tables are compared with the session's workflow run of the same study
(``demo_run``), which the API reaches through the same library functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_runs_the_demo_study_as_the_workflow_does(resources_dir, demo_run, tmp_path):
    out = tmp_path / "tutorial"
    env = {**os.environ, "GENEATTN_DATA": str(resources_dir)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "tutorial.py"), str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("qc.png", "umap.png", "modules.png", "perturbation.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    study = ad.read_h5ad(out / "study.h5ad")
    results = demo_run.results

    # QC, tokens and embeddings: the same cells
    embedded = ad.read_h5ad(results / "embeddings.h5ad")
    assert study.obs_names.tolist() == embedded.obs_names.tolist()
    np.testing.assert_array_equal(study.obsm["X_geneattn"], embedded.obsm["X_geneattn"])

    # modules: the same genes in the same modules with the same hubs. The workflow sums
    # attention shard by shard, the API in one pass: sums agree to float round-off.
    workflow = pd.read_csv(results / "modules.tsv", sep="\t", keep_default_na=False)
    api = pd.read_csv(out / "modules.tsv", sep="\t", keep_default_na=False)
    assert api[["gene_id", "module", "hub_rank"]].equals(
        workflow[["gene_id", "module", "hub_rank"]]
    )
    np.testing.assert_allclose(
        api["intramodular_connectivity"], workflow["intramodular_connectivity"], rtol=1e-5
    )

    # the differential test over cell labels: the same table
    differential = pd.read_csv(results / "differential.tsv", sep="\t")
    mine = study.uns["differential"]["table"]
    assert mine["module"].tolist() == differential["module"].tolist()
    for column in ("case_mean", "control_mean", "diff", "p_value", "fdr"):
        np.testing.assert_allclose(mine[column], differential[column], rtol=1e-5, err_msg=column)

    # evaluation: the same programs, kept together by the same modules of both methods,
    # and the same label transfer scores in the head
    evaluation = pd.read_csv(results / "evaluation.tsv", sep="\t", comment="#")
    mine = study.uns["evaluation"]["table"]
    assert mine["program"].tolist() == evaluation["program"].tolist()
    for column in ("attention_module", "coexpression_module", "pairs"):
        assert mine[column].tolist() == evaluation[column].tolist(), column
    for column in ("attention_fraction", "coexpression_fraction", "attention_p_value"):
        np.testing.assert_allclose(mine[column], evaluation[column], rtol=1e-5, err_msg=column)
    head = (results / "evaluation.tsv").read_text().splitlines()
    transfer = study.uns["evaluation"]["transfer"]
    line = next(t for t in head if t.startswith("# label transfer"))
    for row in transfer.itertuples():
        assert f" {row.embedding} {row.balanced_accuracy:.3f}" in line

    # module analysis: the same module-condition association (per patient) and preservation
    for name in ("module_traits.tsv", "module_preservation.tsv"):
        workflow = pd.read_csv(results / name, sep="\t")
        api = pd.read_csv(out / name, sep="\t")
        assert api["module"].tolist() == workflow["module"].tolist(), name
        numeric = workflow.select_dtypes("number").columns
        np.testing.assert_allclose(
            api[numeric], workflow[numeric], rtol=1e-4, atol=1e-9, err_msg=name
        )

    # perturbation: the same genes, cells and shifts. The workflow's shard tables keep six
    # significant digits, so its rank-sum statistics see ties the API's full-precision shifts
    # do not: statistics and p-values agree closely, not exactly.
    workflow = pd.read_csv(results / "perturbation.tsv", sep="\t").set_index("gene")
    api = pd.read_csv(out / "perturbation.tsv", sep="\t").set_index("gene").loc[workflow.index]
    assert api["n_cells"].tolist() == workflow["n_cells"].tolist()
    assert api["module"].tolist() == workflow["module"].tolist()
    for column in ("mean_cosine_shift", "mean_goal_shift"):
        np.testing.assert_allclose(api[column], workflow[column], rtol=1e-4, err_msg=column)
    np.testing.assert_allclose(api["statistic"], workflow["statistic"], atol=1e-3)
    assert ((api["fdr"] < 0.05) == (workflow["fdr"] < 0.05)).all()
