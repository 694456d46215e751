"""Record Geneformer's own outputs on a few real demo cells (``tests/golden/geneformer``).

Run once by a developer, in a separate environment with torch (the CPU wheel is enough),
transformers 4.46, datasets < 4, peft, anndata, scanpy, loompy, statsmodels, scikit-learn,
seaborn, tdigest and safetensors (never the project's venv, which has no torch)::

    python tests/golden/make_geneformer_fixtures.py \\
        --geneformer SRC/geneformer --resources resources --out tests/golden/geneformer

``SRC/geneformer`` is Geneformer's Python package at upstream commit
05fcbeb8a27d49e0a7a4349152202ee2c1cbfd28 (2026-02-06; public GitHub mirrors carry it, e.g.
``explorerwjy/Geneformer`` or ``keisuke58/BioLLM`` under ``Geneformer/geneformer/``).
Nothing of it is copied into this repository. The script copies the package to a temporary
directory and, there only, replaces the device string ``"cuda"`` by ``"cpu"`` (its code
hard-codes the GPU) and trims ``__init__.py`` to the five modules used (the full one imports
the classifiers and their training stack). Every call passes ``nproc=1`` so that ``datasets``
spawns no process pools. The dictionary pickles of the package are Git LFS pointers in the
mirrors, so the script writes its own pickles from the project's pinned V1 TSVs
(``resources/geneformer_v1``, fetched by ``make demo``): token dictionary, gene medians,
symbol -> Ensembl map, and an identity Ensembl mapping (the V1 release has none).

Inputs:

- ``CHECKPOINT``: a tiny random V1-shaped BERT (the V1 vocabulary of 25,426 tokens, 2,048
  positions, ReLU; 3 layers x 32 hidden x 4 heads) written by
  :func:`geneattn.bert_weights.save_checkpoint` from ``BertWeights.random(config, seed)``.
  Tests rebuild it the same way (numpy only) and check its sha256 (``checkpoint_sha256``).
- ``cells.npz``: 8 real cells of the demo study (``wu2020_200.h5ad``; 3 Tumor, 3 NAT,
  2 Blood), counts of the genes whose symbols map to a token (symbols of one Ensembl ID
  summed, as our tokenizer merges them), ``n_counts`` over all genes, ``source`` labels.

Outputs (``--out``), all small:

- ``cells.npz``: the input cells (see above);
- ``tokens.npz``: ``TranscriptomeTokenizer`` tokens, V1 (2,048, no special tokens) and with a
  V2-format dictionary and medians (:func:`v2_format_dictionaries`: ``<cls>``/``<eos>``,
  4,096 tokens, medians that differ from V1's), plus the ``source`` attribute carried by
  ``custom_attr_name_dict``;
- ``gene_embeddings.npz``: ``EmbExtractor(emb_mode="gene")`` embeddings of 64 of the genes
  (every k-th by Ensembl ID) and the number of genes;
- ``embeddings.npz``: ``EmbExtractor`` cell embeddings (``emb_layer`` -1 and 0) and state
  embeddings (``get_state_embs``, ``exact_mean`` and ``exact_median``);
- ``perturb.npz``: ``InSilicoPerturber`` outputs: per cell and perturbed gene, the cell
  ``cos_sims`` (no states) and the shift toward each state (``cell_states_to_model``) for
  ``delete`` and ``overexpress`` of every gene; gene-level cosines (``cell_and_gene``) for a
  few perturbed genes per cell; group perturbations (a gene list, ``delete`` and
  ``overexpress`` including genes absent from a cell and cells at the 2,048 cap); and
  ``combos=1`` with an anchor gene (``delete``);
- ``stats_*.tsv.gz``: ``InSilicoPerturberStats`` tables (``goal_state_shift`` with
  ``alt_states``, ``vs_null``, ``mixture_model``, ``aggregate_gene_shifts``) as Geneformer
  writes them (CSV converted to TSV).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: Upstream Geneformer commit the fixtures were recorded with.
GENEFORMER_COMMIT = "05fcbeb8a27d49e0a7a4349152202ee2c1cbfd28"

#: The tiny V1-shaped checkpoint (BertConfig fields) and the seed of its random weights.
CHECKPOINT = {
    "vocab_size": 25426,
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 2048,
    "hidden_act": "relu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
}
CHECKPOINT_SEED = 14

#: Goal states of the perturbations (Geneformer's ``cell_states_to_model``).
STATES = {
    "state_key": "source",
    "start_state": "Tumor",
    "goal_state": "NAT",
    "alt_states": ["Blood"],
}

#: Genes whose EmbExtractor gene embeddings (emb_mode gene) are kept.
GENE_EMBEDDINGS_KEPT = 64

#: Perturbed genes per cell whose gene-level cosines (cell_and_gene) are kept.
GENE_LEVEL_PER_CELL = 6


def v2_format_dictionaries(
    token_dictionary: dict[str, int], medians: dict[str, float]
) -> tuple[dict[str, int], dict[str, float]]:
    """A V2-format token dictionary and gene medians derived from V1's.

    The dictionary is V1's with ``<cls>`` and ``<eos>`` appended (ids 25,426 and 25,427).
    Each median is V1's times ``2 ** u``, ``u`` uniform in [-1, 1) from a seeded generator
    over the genes in sorted order, so ranks differ from V1's: a tokenizer that ignored the
    given medians would fail the comparison. Pure Python and numpy (tests import it).
    """
    tokens = dict(token_dictionary)
    n = len(tokens)
    tokens["<cls>"] = n
    tokens["<eos>"] = n + 1
    genes = sorted(medians)
    factors = 2.0 ** np.random.default_rng(2).uniform(-1.0, 1.0, len(genes))
    return tokens, {g: float(medians[g] * f) for g, f in zip(genes, factors, strict=True)}


def select_cells(obs, n_genes: np.ndarray) -> np.ndarray:
    """Row indices of the fixture cells: the 2 smallest Tumor, NAT and Blood cells with at
    least 150 genes, plus the Tumor and NAT cell with the most genes (at the 2,048 cap)."""
    chosen: list[int] = []
    source = obs["source"].astype(str).to_numpy()
    for label, k in (("Tumor", 2), ("NAT", 2), ("Blood", 2)):
        rows = np.flatnonzero((source == label) & (n_genes >= 150))
        rows = rows[np.argsort(n_genes[rows], kind="stable")]
        chosen += rows[:k].tolist()
    for label in ("Tumor", "NAT"):
        rows = np.flatnonzero(source == label)
        chosen.append(int(rows[np.argmax(n_genes[rows])]))
    return np.array(chosen)


# ---------------------------------------------------------------------------------------------


def _read_tsv(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.split("\t")) for line in lines]


def prepare_package(src: Path, work: Path, dicts: dict[str, dict]) -> Path:
    """Copy Geneformer's package, patch ``cuda`` -> ``cpu``, write its dictionary pickles."""
    pkg = work / "geneformer"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("*.pkl", "mtl", "__pycache__"))
    for py in pkg.glob("*.py"):
        text = py.read_text(encoding="utf-8")
        py.write_text(text.replace('"cuda"', '"cpu"'), encoding="utf-8")
    names = {
        "token": "token_dictionary.pkl",
        "median": "gene_median_dictionary.pkl",
        "name": "gene_name_id_dict.pkl",
        "mapping": "ensembl_mapping_dict.pkl",
        "token_v2": "token_dictionary_v2.pkl",
        "median_v2": "gene_median_dictionary_v2.pkl",
    }
    for key, name in names.items():
        with open(pkg / name, "wb") as fh:
            pickle.dump(dicts[key], fh)
    init = f'''
from pathlib import Path
_d = Path(__file__).parent
GENE_MEDIAN_FILE = _d / "{names["median_v2"]}"
TOKEN_DICTIONARY_FILE = _d / "{names["token_v2"]}"
ENSEMBL_DICTIONARY_FILE = _d / "{names["name"]}"
ENSEMBL_MAPPING_FILE = None
GENE_MEDIAN_FILE_30M = _d / "{names["median"]}"
TOKEN_DICTIONARY_FILE_30M = _d / "{names["token"]}"
ENSEMBL_DICTIONARY_FILE_30M = _d / "{names["name"]}"
ENSEMBL_MAPPING_FILE_30M = _d / "{names["mapping"]}"
from . import perturber_utils, tokenizer, emb_extractor, in_silico_perturber
from . import in_silico_perturber_stats
from .emb_extractor import EmbExtractor
from .in_silico_perturber import InSilicoPerturber
from .in_silico_perturber_stats import InSilicoPerturberStats
from .tokenizer import TranscriptomeTokenizer
'''
    (pkg / "__init__.py").write_text(init, encoding="utf-8")
    return pkg


def build_cells(resources: Path, name_map: dict[str, str], token_dict: dict[str, int]):
    """The fixture cells: counts over mapped Ensembl IDs (symbols of one ID summed)."""
    import anndata as ad
    import scipy.sparse as sp

    adata = ad.read_h5ad(resources / "wu2020_200.h5ad")
    x = sp.csr_matrix(adata.X).astype(np.float64)
    symbols = adata.var_names.astype(str).to_numpy()
    ens = np.array([name_map.get(s, "") for s in symbols], dtype=object)
    keep = np.flatnonzero([e in token_dict for e in ens])
    genes, inverse = np.unique(ens[keep].astype(str), return_inverse=True)
    agg = sp.csr_matrix((np.ones(len(keep)), (keep, inverse)), shape=(x.shape[1], len(genes)))
    mapped = sp.csr_matrix(x @ agg)
    n_genes = np.diff(mapped.indptr)
    rows = select_cells(adata.obs, n_genes)
    sub = mapped[rows]
    used = np.unique(sub.indices)
    sub = sp.csr_matrix(sub[:, used])
    sub.sort_indices()
    return {
        "data": sub.data,
        "indices": sub.indices.astype(np.int32),
        "indptr": sub.indptr.astype(np.int64),
        "gene_ids": genes[used].astype(str),
        "n_counts": np.asarray(x[rows].sum(axis=1)).ravel(),
        "cell_ids": adata.obs_names.to_numpy()[rows].astype(str),
        "source": np.asarray(adata.obs["source"].astype(str).to_numpy()[rows], dtype=str),
    }


def write_h5ad(cells: dict, path: Path) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    x = sp.csr_matrix(
        (cells["data"], cells["indices"], cells["indptr"]),
        shape=(len(cells["cell_ids"]), len(cells["gene_ids"])),
    )
    obs = pd.DataFrame(
        {"n_counts": cells["n_counts"], "source": cells["source"], "cell_id": cells["cell_ids"]},
        index=cells["cell_ids"],
    )
    var = pd.DataFrame({"ensembl_id": cells["gene_ids"]}, index=cells["gene_ids"])
    ad.AnnData(X=x, obs=obs, var=var).write_h5ad(path)


def ragged(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = [len(s) for s in seqs]
    flat = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]) if seqs else np.zeros(0)
    return flat.astype(np.int32), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def load_pickles(directory: Path, prefix: str, kind: str) -> list[dict]:
    """Geneformer's raw output dicts of one run (``prefix``) and kind (cell/gene embs)."""
    out = []
    for f in sorted(directory.iterdir()):
        name = f.name
        if re.match(rf"in_silico_\w+?_{prefix}_", name) and kind in name:
            if name.endswith("_raw.pickle"):
                with open(f, "rb") as fh:
                    out.append(pickle.load(fh))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--geneformer", required=True, type=Path, help="Geneformer's package dir")
    parser.add_argument("--resources", default=ROOT / "resources", type=Path)
    parser.add_argument("--out", default=HERE / "geneformer", type=Path)
    parser.add_argument("--keep-work", type=Path, help="keep the work directory here")
    parser.add_argument(
        "--only-gene-embeddings",
        action="store_true",
        help="after tokenizing, record only gene_embeddings.npz (added after the first run)",
    )
    args = parser.parse_args(argv)

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from geneattn.models.bert_weights import BertConfig, BertWeights, save_checkpoint

    torch.set_num_threads(1)
    work = args.keep_work or Path(tempfile.mkdtemp(prefix="gf-fixtures-"))
    work.mkdir(parents=True, exist_ok=True)
    res = args.resources / "geneformer_v1"
    token_dict = {g: int(t) for g, t in _read_tsv(res / "token_dictionary.tsv")}
    medians = {g: float(m) for g, m in _read_tsv(res / "gene_median_dictionary.tsv")}
    name_map = {s: g for s, g in _read_tsv(res / "gene_name_id.tsv")}
    token_v2, median_v2 = v2_format_dictionaries(token_dict, medians)
    dicts = {
        "token": token_dict,
        "median": medians,
        "name": name_map,
        "mapping": {g: g for g in token_dict if g.startswith("ENS")},
        "token_v2": token_v2,
        "median_v2": median_v2,
    }
    prepare_package(args.geneformer, work, dicts)
    sys.path.insert(0, str(work))
    import geneformer  # noqa: F401  (the patched temporary copy)
    from datasets import load_from_disk
    from geneformer import (
        EmbExtractor,
        InSilicoPerturber,
        InSilicoPerturberStats,
        TranscriptomeTokenizer,
    )

    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # --- cells and checkpoint -----------------------------------------------------------------
    cells = build_cells(args.resources, name_map, token_dict)
    np.savez_compressed(out / "cells.npz", **cells)
    (work / "h5ad").mkdir(exist_ok=True)
    write_h5ad(cells, work / "h5ad" / "cells.h5ad")
    config = BertConfig(**CHECKPOINT)
    model_dir = save_checkpoint(work / "model", config, BertWeights.random(config, CHECKPOINT_SEED))
    sha = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    cell_ids = [str(c) for c in cells["cell_ids"]]

    # --- tokenizer ----------------------------------------------------------------------------
    attrs = {"source": "source", "cell_id": "cell_id"}
    tk = TranscriptomeTokenizer(attrs, nproc=1, model_version="V1")
    tk.tokenize_data(work / "h5ad", work, "v1", file_format="h5ad")
    tk2 = TranscriptomeTokenizer(
        attrs,
        nproc=1,
        model_version="V2",
        special_token=True,
        model_input_size=4096,
        gene_median_file=work / "geneformer" / "gene_median_dictionary_v2.pkl",
        token_dictionary_file=work / "geneformer" / "token_dictionary_v2.pkl",
        gene_mapping_file=None,
    )
    tk2.tokenize_data(work / "h5ad", work, "v2", file_format="h5ad")
    ds1, ds2 = load_from_disk(str(work / "v1.dataset")), load_from_disk(str(work / "v2.dataset"))
    order1 = [ds1["cell_id"].index(c) for c in cell_ids]
    order2 = [ds2["cell_id"].index(c) for c in cell_ids]
    v1_tokens, v1_offsets = ragged([ds1["input_ids"][i] for i in order1])
    v2_tokens, v2_offsets = ragged([ds2["input_ids"][i] for i in order2])
    np.savez_compressed(
        out / "tokens.npz",
        v1_tokens=v1_tokens,
        v1_offsets=v1_offsets,
        v1_source=np.array([ds1["source"][i] for i in order1]),
        v2_tokens=v2_tokens,
        v2_offsets=v2_offsets,
        v2_source=np.array([ds2["source"][i] for i in order2]),
        cell_ids=np.array(cell_ids),
    )
    data = str(work / "v1.dataset")

    # --- gene embeddings (emb_mode gene, mean over every occurrence) ---------------------------
    ex = EmbExtractor(
        model_type="Pretrained",
        emb_mode="gene",
        gene_emb_style="mean_pool",
        max_ncells=None,
        emb_layer=-1,
        forward_batch_size=4,
        nproc=1,
        model_version="V1",
    )
    genes_df = ex.extract_embs(str(model_dir), data, str(work), "gene_emb")
    genes_df = genes_df.sort_index()
    keep = genes_df.index[:: max(1, len(genes_df) // GENE_EMBEDDINGS_KEPT)][:GENE_EMBEDDINGS_KEPT]
    np.savez_compressed(
        out / "gene_embeddings.npz",
        gene_ids=np.asarray(keep, dtype=str),
        embeddings=genes_df.loc[keep].to_numpy(dtype=np.float32),
        n_genes=np.array(len(genes_df)),
    )
    if args.only_gene_embeddings:
        return 0

    # --- embeddings ---------------------------------------------------------------------------
    emb = {}
    for layer in (-1, 0):
        ex = EmbExtractor(
            model_type="Pretrained",
            emb_mode="cell",
            max_ncells=None,
            emb_layer=layer,
            emb_label=["cell_id"],
            forward_batch_size=4,
            nproc=1,
            model_version="V1",
        )
        df = ex.extract_embs(str(model_dir), data, str(work), f"emb{layer}")
        df = df.set_index("cell_id").loc[cell_ids]
        emb[f"cell_layer{-layer}"] = df.to_numpy(dtype=np.float32)
    state_embs = {}
    for stat in ("exact_mean", "exact_median"):
        ex = EmbExtractor(
            model_type="Pretrained",
            emb_mode="cell",
            max_ncells=None,
            emb_layer=-1,
            summary_stat=stat,
            forward_batch_size=4,
            nproc=1,
            model_version="V1",
        )
        states = ex.get_state_embs(dict(STATES), str(model_dir), data, str(work), f"state_{stat}")
        for k, v in states.items():
            emb[f"state_{stat}_{k}"] = v.detach().cpu().numpy().astype(np.float32)
        if stat == "exact_mean":
            state_embs = states
    np.savez_compressed(out / "embeddings.npz", **emb, cell_ids=np.array(cell_ids))

    # --- perturbations ------------------------------------------------------------------------
    perturb: dict[str, np.ndarray] = {}
    small = cell_ids[:6]  # every gene perturbed in the six smaller cells

    def run_isp(tag: str, cell: str | None, **options) -> Path:
        d = work / "isp" / tag
        d.mkdir(parents=True, exist_ok=True)
        prefix = f"{tag}_c{cell_ids.index(cell) if cell is not None else 'all'}"
        filt = {"cell_id": [cell]} if cell is not None else None
        isp = InSilicoPerturber(
            model_type="Pretrained",
            max_ncells=None,
            emb_layer=-1,
            nproc=1,
            model_version="V1",
            filter_data=filt,
            **options,
        )
        isp.perturb_data(str(model_dir), data, str(d), prefix)
        return d, prefix

    def collect(where: tuple[Path, str], kind: str) -> dict:
        d, prefix = where
        merged: dict = {}
        for dct in load_pickles(d, prefix, kind):
            for k, v in dct.items():
                merged.setdefault(k, []).extend(v if isinstance(v, list) else [v])
        return merged

    def state_rows(where: tuple[Path, str], c: int) -> list[tuple]:
        rows = []
        for dct in load_pickles(*where, "cell_embs"):
            for state, inner in dct.items():
                for (tok, _), vals in inner.items():
                    key = tok if isinstance(tok, int) else -1
                    rows += [(c, key, state, float(v)) for v in vals]
        return rows

    def save_goal(name: str, rows: list[tuple]) -> None:
        perturb[f"{name}_goal_cell"] = np.array([r[:2] for r in rows], dtype=np.int64)
        perturb[f"{name}_goal_state"] = np.array([r[2] for r in rows])
        perturb[f"{name}_goal_value"] = np.array([r[3] for r in rows], dtype=np.float64)

    source = [str(x) for x in cells["source"]]
    tumor_small = [c for c in small if source[cell_ids.index(c)] == "Tumor"]
    for mode in ("delete", "overexpress"):
        rows_cell, rows_gene, goal = [], [], []
        for cell in small:
            c = cell_ids.index(cell)
            where = run_isp(f"{mode}_gene", cell, perturb_type=mode, emb_mode="cell_and_gene")
            for (tok, _), vals in collect(where, "cell_embs").items():
                rows_cell += [(c, int(tok), float(v)) for v in vals]
            genes = collect(where, "gene_embs")
            perturbed = sorted({k[0] for k in genes})
            step = max(1, len(perturbed) // GENE_LEVEL_PER_CELL)
            keep = set(perturbed[::step][:GENE_LEVEL_PER_CELL])
            for (pg, a), vals in genes.items():
                if pg in keep:
                    rows_gene += [(c, int(pg), int(a), float(v)) for v in vals]
            if cell in tumor_small:  # goal states: start-state (Tumor) cells only
                where = run_isp(
                    f"{mode}_states",
                    cell,
                    perturb_type=mode,
                    emb_mode="cell",
                    cell_states_to_model=dict(STATES),
                    state_embs_dict=state_embs,
                )
                goal += state_rows(where, c)
        perturb[f"{mode}_cell"] = np.array(rows_cell, dtype=np.float64)
        perturb[f"{mode}_gene"] = np.array(rows_gene, dtype=np.float64)
        save_goal(mode, goal)

    # --- group perturbations (genes_to_perturb = a list), one run per cell ---------------------
    inv = {t: g for g, t in token_dict.items()}
    seqs = {c: list(ds1["input_ids"][order1[i]]) for i, c in enumerate(cell_ids)}
    common = [t for t in seqs[cell_ids[0]] if all(t in s for s in seqs.values())]
    gene_a, gene_b = common[0], common[len(common) // 2]
    absent = [t for t in seqs[cell_ids[-1]][2000:] if sum(t in s for s in seqs.values()) <= 4]
    gene_c = absent[0]  # near the end of a capped cell, absent from half the cells or more
    groups = {
        "group_delete_a": ("delete", [gene_a], "cell_and_gene"),
        "group_delete_ab": ("delete", [gene_a, gene_b], "cell"),
        "group_overexpress_c": ("overexpress", [gene_c], "cell_and_gene"),
        "group_overexpress_ac": ("overexpress", [gene_a, gene_c], "cell"),
    }
    perturb["group_tokens"] = np.array([gene_a, gene_b, gene_c], dtype=np.int64)
    for name, (mode, group, emb_mode) in groups.items():
        rows_cell, rows_gene, goal = [], [], []
        for cell in cell_ids:
            c = cell_ids.index(cell)
            where = run_isp(
                name,
                cell,
                perturb_type=mode,
                genes_to_perturb=[inv[t] for t in group],
                emb_mode=emb_mode,
                forward_batch_size=1,
            )
            for _, vals in collect(where, "cell_embs").items():
                rows_cell += [(c, float(v)) for v in vals]
            if emb_mode == "cell_and_gene":
                for (_, a), vals in collect(where, "gene_embs").items():
                    rows_gene += [(c, int(a), float(v)) for v in vals]
            if source[c] == "Tumor" and len(group) == 1:
                where = run_isp(
                    f"{name}_states",
                    cell,
                    perturb_type=mode,
                    genes_to_perturb=[inv[t] for t in group],
                    emb_mode="cell",
                    cell_states_to_model=dict(STATES),
                    state_embs_dict=state_embs,
                    forward_batch_size=1,
                )
                goal += state_rows(where, c)
        perturb[f"{name}_cell"] = np.array(rows_cell, dtype=np.float64)
        if rows_gene:
            perturb[f"{name}_gene"] = np.array(rows_gene, dtype=np.float64)
        if goal:
            save_goal(name, goal)

    # --- combos: an anchor gene with every other gene of the cell (delete) --------------------
    rows = []
    for cell in small[:2]:
        c = cell_ids.index(cell)
        where = run_isp(
            "combo_delete",
            cell,
            perturb_type="delete",
            combos=1,
            anchor_gene=inv[gene_a],
            emb_mode="cell",
        )
        for (tok, _), vals in collect(where, "cell_embs").items():
            rows += [(c, int(tok), float(v)) for v in vals]
    perturb["combo_delete_cell"] = np.array(rows, dtype=np.float64)
    np.savez_compressed(out / "perturb.npz", **perturb, cell_ids=np.array(cell_ids))

    # --- stats --------------------------------------------------------------------------------
    def pool(tags: list[str], cells_: list[str]) -> Path:
        d = work / "stats_in" / "_".join(tags) / "_".join(str(cell_ids.index(c)) for c in cells_)
        d.mkdir(parents=True, exist_ok=True)
        for tag in tags:
            for cell in cells_:
                prefix = f"{tag}_c{cell_ids.index(cell)}"
                for f in (work / "isp" / tag).iterdir():
                    if re.match(rf"in_silico_\w+?_{prefix}_", f.name):
                        shutil.copy(f, d / f.name)
        return d

    def stats(name: str, input_dir: Path, null_dir: Path | None = None, **options) -> None:
        st = InSilicoPerturberStats(model_version="V1", **options)
        st.get_stats(str(input_dir), None if null_dir is None else str(null_dir), str(work), name)
        table = pd.read_csv(work / f"{name}.csv", index_col=0)
        table.to_csv(
            out / f"stats_{name}.tsv.gz",
            sep="\t",
            index=False,
            compression={"method": "gzip", "mtime": 0},
        )

    import pandas as pd

    tumor_all = [c for c in cell_ids if source[cell_ids.index(c)] == "Tumor"]
    nat_small = [c for c in small if source[cell_ids.index(c)] == "NAT"]
    for mode in ("delete", "overexpress"):
        stats(
            f"goal_state_shift_{mode}",
            pool([f"{mode}_states"], tumor_small),
            mode="goal_state_shift",
            cell_states_to_model=dict(STATES),
        )
    stats(
        "vs_null_delete",
        pool(["delete_gene"], tumor_small),
        pool(["delete_gene"], nat_small),
        mode="vs_null",
    )
    stats("mixture_model_delete", pool(["delete_gene"], small), mode="mixture_model")
    stats(
        "aggregate_gene_shifts_group_delete_a",
        pool(["group_delete_a"], small),
        mode="aggregate_gene_shifts",
        genes_perturbed=[inv[gene_a]],
    )
    stats(
        "aggregate_data_group_delete_a",
        pool(["group_delete_a"], cell_ids),
        mode="aggregate_data",
        genes_perturbed=[inv[gene_a]],
    )
    stats(
        "goal_state_shift_group_delete_a",
        pool(["group_delete_a_states"], tumor_all),
        mode="goal_state_shift",
        genes_perturbed=[inv[gene_a]],
        cell_states_to_model=dict(STATES),
    )

    meta = {
        "geneformer_commit": GENEFORMER_COMMIT,
        "checkpoint": CHECKPOINT,
        "checkpoint_seed": CHECKPOINT_SEED,
        "checkpoint_sha256": sha,
        "states": STATES,
        "group_genes": {"a": inv[gene_a], "b": inv[gene_b], "c": inv[gene_c]},
        "torch": torch.__version__,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("wrote", out, "work in", work)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
