"""The demo study from Python: ``import geneattn as ga`` in scanpy's idiom.

The same steps as ``make demo`` (the workflow in ``config.yaml``), through the library
functions the workflow's rules call, on one AnnData. Run it with ``python docs/tutorial.py
[OUT_DIR]``; it writes the figures and tables to OUT_DIR (default ``tutorial/``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import geneattn as ga

out = Path(sys.argv[1] if len(sys.argv) > 1 else "tutorial")
out.mkdir(parents=True, exist_ok=True)

adata = ga.datasets.demo()  # 200 T cells x 30,727 genes, raw counts; obs["source"]
ga.pp.qc(adata, condition_column="source", keep=["Tumor", "NAT"])  # case, control
ga.pp.tokenize(adata)  # Geneformer V1 rank-value tokens: obsm["geneattn_tokens"]
ga.tl.model(adata)  # study-derived attention weights (or checkpoint="gf-6L-30M-i2048")
ga.tl.embed(adata)  # obsm["X_geneattn"]
ga.tl.attention(adata)  # gene x gene attention sums per condition: uns["attention"]
ga.tl.network(adata)  # mean attention, top 10 edges per gene: uns["network"]
ga.tl.modules(adata)  # Leiden modules of the pooled network: uns["modules"], var["module"]
ga.tl.differential(adata)  # case vs control, permuting cell labels: uns["differential"]
# enriched modules; known programs kept together beside co-expression modules of the same
# genes; label transfer of the embeddings beside PCA: uns["evaluation"]
ga.tl.evaluate(adata, label_column="cluster_orig")
# hdWGCNA-style: eigengenes per cell (obsm["X_module_eigengenes"]), kME and hubs by kME
# (var["module_kme"]), module-condition association with the patient as the unit, and
# preservation of each module from the control to the case network: uns["module_analysis"]
ga.tl.module_analysis(adata, sample_column="patient")
# delete hub genes of the disease modules, tested across patients: uns["perturbation"]
ga.tl.perturb(adata, sample_column="patient")

print(adata)
print(adata.uns["perturbation"]["table"].head(10).to_string(index=False))
ga.pl.qc(adata).savefig(out / "qc.png")
ga.pl.embedding(adata).savefig(out / "umap.png")
ga.pl.modules(adata).savefig(out / "modules.png")
ga.pl.perturbation(adata).savefig(out / "perturbation.png")
ga.io.write_table(out / "modules.tsv", adata.uns["modules"]["table"])
ga.io.write_table(out / "evaluation.tsv", adata.uns["evaluation"]["table"])
ga.io.write_table(out / "module_traits.tsv", adata.uns["module_analysis"]["traits"])
ga.io.write_table(out / "module_preservation.tsv", adata.uns["module_analysis"]["preservation"])
ga.io.write_table(out / "perturbation.tsv", adata.uns["perturbation"]["table"])
adata.write_h5ad(out / "study.h5ad")
