"""Count readers: every format to the same validated AnnData, and a clear error otherwise."""

from __future__ import annotations

import gzip
import logging
import shutil

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from geneattn.errors import InputError
from geneattn.io.readers import FORMATS, detect_format, read_counts, sum_duplicate_genes

CELLS = ["AAAC-1", "AAAG-1", "AACT-1"]
GENES = ["MT-CO1", "CD3E", "CD8A", "GZMB"]
COUNTS = np.array([[1, 0, 3, 0], [0, 2, 0, 5], [4, 0, 0, 1]], dtype=np.int64)


def _anndata(counts=COUNTS, genes=GENES, cells=CELLS) -> ad.AnnData:
    obs = pd.DataFrame({"source": ["Tumor", "NAT", "Blood"][: len(cells)]}, index=cells)
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))


def _write_csv(path, counts=COUNTS, genes=GENES, cells=CELLS, *, sep=",", transpose=False):
    table = pd.DataFrame(counts, index=cells, columns=genes)
    (table.T if transpose else table).to_csv(path, sep=sep)
    return path


def _write_10x_h5(path, counts=COUNTS, genes=GENES, cells=CELLS, *, extra_feature=False):
    """Cell Ranger v3 layout: a CSC genes x cells matrix, i.e. the CSR of cells x genes."""
    counts = np.asarray(counts)
    ids = [f"ENSG{i:011d}" for i in range(len(genes))]
    types = ["Gene Expression"] * len(genes)
    if extra_feature:
        counts = np.hstack([counts, np.full((counts.shape[0], 1), 7)])
        genes, ids, types = [*genes, "CD3_TotalSeqB"], [*ids, "CD3"], [*types, "Antibody Capture"]
    csr = sp.csr_matrix(counts)
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["data"] = csr.data.astype(np.int32)
        m["indices"] = csr.indices.astype(np.int64)
        m["indptr"] = csr.indptr.astype(np.int64)
        m["shape"] = np.array([counts.shape[1], counts.shape[0]], dtype=np.int32)
        m["barcodes"] = np.array(cells, dtype="S")
        feats = m.create_group("features")
        feats["id"] = np.array(ids, dtype="S")
        feats["name"] = np.array(genes, dtype="S")
        feats["feature_type"] = np.array(types, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")
    return path


def _gzip(path):
    with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


def _write_mtx_dir(directory, counts=COUNTS, genes=GENES, cells=CELLS, *, legacy=False, gz=True):
    directory.mkdir()
    scipy.io.mmwrite(directory / "matrix.mtx", sp.coo_matrix(np.asarray(counts).T))
    features = directory / ("genes.tsv" if legacy else "features.tsv")
    rows = [
        [f"ENSG{i:011d}", g] + ([] if legacy else ["Gene Expression"]) for i, g in enumerate(genes)
    ]
    features.write_text("".join("\t".join(r) + "\n" for r in rows))
    (directory / "barcodes.tsv").write_text("".join(c + "\n" for c in cells))
    if gz:
        for name in ("matrix.mtx", features.name, "barcodes.tsv"):
            _gzip(directory / name)
    return directory


def _assert_counts(adata, counts=COUNTS, genes=GENES, cells=CELLS):
    assert isinstance(adata.X, sp.csr_matrix)
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == list(genes)
    assert list(adata.obs_names) == list(cells)


# -- each format --------------------------------------------------------------------------


def test_h5ad_keeps_counts_and_metadata(tmp_path):
    path = tmp_path / "counts.h5ad"
    src = _anndata()
    src.var["gene_ids"] = [f"ENSG{i}" for i in range(4)]
    src.write_h5ad(path)
    adata = read_counts(path)
    _assert_counts(adata)
    assert adata.obs["source"].tolist() == ["Tumor", "NAT", "Blood"]
    assert adata.var["gene_ids"].tolist() == ["ENSG0", "ENSG1", "ENSG2", "ENSG3"]


def test_h5ad_dense_integer_x(tmp_path):
    path = tmp_path / "dense.h5ad"
    ad.AnnData(
        COUNTS.astype(np.int32), obs=pd.DataFrame(index=CELLS), var=pd.DataFrame(index=GENES)
    ).write_h5ad(path)
    _assert_counts(read_counts(path, fmt="h5ad"))


def test_h5ad_counts_from_layer(tmp_path):
    path = tmp_path / "layered.h5ad"
    src = _anndata()
    src.layers["counts"] = src.X.copy()
    src.X = src.X.multiply(0.5).tocsr()  # normalised, non-integer
    src.write_h5ad(path)
    _assert_counts(read_counts(path, layer="counts"))
    with pytest.raises(InputError, match=r"non-integer value 0\.5"):
        read_counts(path)


def test_missing_layer_lists_layers(tmp_path):
    path = tmp_path / "layered.h5ad"
    src = _anndata()
    src.layers["spliced"] = src.X.copy()
    src.layers["unspliced"] = src.X.copy()
    src.write_h5ad(path)
    with pytest.raises(InputError) as err:
        read_counts(path, layer="counts")
    message = str(err.value)
    assert str(path) in message
    assert "no layer 'counts'" in message
    assert "'spliced', 'unspliced'" in message


def test_10x_h5_v3_layout(tmp_path):
    path = _write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", extra_feature=True)
    adata = read_counts(path)
    _assert_counts(adata)  # the antibody-capture feature is dropped
    assert adata.var["gene_ids"].tolist() == [f"ENSG{i:011d}" for i in range(4)]
    assert set(adata.var["genome"]) == {"GRCh38"}


@pytest.mark.parametrize(("legacy", "gz"), [(False, True), (True, False), (False, False)])
def test_10x_mtx_directory(tmp_path, legacy, gz):
    directory = _write_mtx_dir(tmp_path / "mtx", legacy=legacy, gz=gz)
    adata = read_counts(directory)
    _assert_counts(adata)
    assert adata.var["gene_ids"].iloc[1] == "ENSG00000000001"


def test_10x_mtx_missing_barcodes(tmp_path):
    directory = _write_mtx_dir(tmp_path / "mtx")
    (directory / "barcodes.tsv.gz").unlink()
    with pytest.raises(InputError, match=r"lacks barcodes\.tsv\[\.gz\]") as err:
        read_counts(directory)
    assert str(directory) in str(err.value)


def test_directory_without_matrix(tmp_path):
    with pytest.raises(InputError, match="not a 10x mtx directory"):
        read_counts(tmp_path)


def test_loom(tmp_path):
    path = tmp_path / "counts.loom"
    _anndata().write_loom(path)
    adata = read_counts(path)
    _assert_counts(adata)
    assert adata.obs["source"].tolist() == ["Tumor", "NAT", "Blood"]


def test_loom_layer(tmp_path):
    path = tmp_path / "velocity.loom"
    src = _anndata()
    src.layers["spliced"] = sp.csr_matrix(COUNTS * 2)
    src.write_loom(path)
    _assert_counts(read_counts(path))  # the main matrix, even with a "spliced" layer
    _assert_counts(read_counts(path, layer="spliced"), counts=COUNTS * 2)


def test_csv(tmp_path):
    _assert_counts(read_counts(_write_csv(tmp_path / "counts.csv")))


def test_tsv_gz_transposed(tmp_path):
    path = _write_csv(tmp_path / "genes_by_cells.tsv.gz", sep="\t", transpose=True)
    _assert_counts(read_counts(path, transpose=True))


def test_transpose_only_for_tables(tmp_path):
    path = tmp_path / "counts.h5ad"
    _anndata().write_h5ad(path)
    with pytest.raises(InputError, match="transpose applies to csv/tsv"):
        read_counts(path, transpose=True)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.h5ad", "h5ad"),
        ("a.h5", "10x_h5"),
        ("a.loom", "loom"),
        ("a.csv", "csv"),
        ("A.CSV.GZ", "csv"),
        ("a.tsv", "tsv"),
        ("a.tsv.gz", "tsv"),
    ],
)
def test_detect_format(tmp_path, name, fmt):
    path = tmp_path / name
    path.touch()
    assert detect_format(path) == fmt
    assert fmt in FORMATS


# -- validation errors --------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "absent.h5ad"
    with pytest.raises(InputError, match="no such file") as err:
        read_counts(path)
    assert err.value.path == path


@pytest.mark.parametrize("name", ["counts.xlsx", "counts.h5ad.gz", "counts"])
def test_unknown_format(tmp_path, name):
    path = tmp_path / name
    path.write_text("x")
    with pytest.raises(InputError, match="unknown counts format") as err:
        read_counts(path)
    assert str(err.value).startswith(str(path))


def test_unsupported_format_name(tmp_path):
    path = _write_csv(tmp_path / "counts.csv")
    with pytest.raises(InputError, match="unsupported format 'xlsx'"):
        read_counts(path, fmt="xlsx")


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.h5ad"
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(InputError, match="cannot read as h5ad") as err:
        read_counts(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("writer", "shape"),
    [
        (lambda p: p.write_text(",CD3E,CD8A\n"), None),
        (lambda p: p.write_text("cell\nc1\nc2\n"), "2 cells x 0 genes"),
    ],
)
def test_empty_table(tmp_path, writer, shape):
    path = tmp_path / "empty.csv"
    writer(path)
    with pytest.raises(InputError, match="empty count matrix") as err:
        read_counts(path)
    assert str(path) in str(err.value)
    if shape:
        assert shape in str(err.value)


def test_empty_h5ad(tmp_path):
    path = tmp_path / "empty.h5ad"
    _anndata()[:0].copy().write_h5ad(path)
    with pytest.raises(InputError, match=r"empty count matrix \(0 cells x 4 genes\)"):
        read_counts(path)


@pytest.mark.parametrize(
    ("bad", "problem", "shown"),
    [
        (np.inf, "NaN or infinite value", "inf"),
        (-2.0, "negative value", "-2.0"),
        (2.5, "non-integer value", "2.5"),
    ],
)
def test_bad_value_names_first_entry(tmp_path, bad, problem, shown):
    counts = COUNTS.astype(np.float64)
    counts[1, 3] = bad  # first offender in row-major order
    counts[2, 0] = bad
    path = _write_csv(tmp_path / "bad.csv", counts)
    with pytest.raises(InputError) as err:
        read_counts(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {problem} {shown} at cell 'AAAG-1', gene 'GZMB'")
    assert "2 such entries" in message


def test_nan_in_h5ad_names_first_entry(tmp_path):
    counts = COUNTS.astype(np.float64)
    counts[1, 3] = np.nan
    path = tmp_path / "nan.h5ad"
    _anndata(counts).write_h5ad(path)
    with pytest.raises(
        InputError, match=r"NaN or infinite value nan at cell 'AAAG-1', gene 'GZMB'"
    ):
        read_counts(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a row cut short: pandas pads it with NaN, which must not read as a NaN count
        (
            ",A,B,C\nc1,1,2,3\nc2,4,5\nc3,1,1,1\n",
            r"line 3 is a short row: 3 fields where 4 are expected \(the name and 3 genes\), "
            r"row 'c2'",
        ),
        (
            ",A,B,C\nc1,1,2,3\n\nc2,4,5,6,7\n",
            r"line 4 is a long row: 5 fields where 4 are expected",
        ),
        (
            ",A,B,C\nc1,1,2,3\nc2,4,,6\n",
            r"line 3: empty field at cell 'c2', gene 'B' \(field 3 of 4\)",
        ),
        (
            "A,B,C\nc1,1,NA,3\n",  # header without a name column
            r"line 2: missing value 'NA' at cell 'c1', gene 'B'",
        ),
    ],
)
def test_short_row_or_empty_field_named_by_line(tmp_path, text, message):
    path = tmp_path / "ragged.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        read_counts(path)
    assert str(err.value).startswith(f"{path}: line ")
    assert "NaN" not in str(err.value)


def test_short_row_in_transposed_gzipped_tsv(tmp_path):
    path = tmp_path / "genes_by_cells.tsv"
    path.write_text("\tc1\tc2\nA\t1\t2\nB\t3\n")
    _gzip(path)
    with pytest.raises(
        InputError,
        match=r"line 3 is a short row: 2 fields where 3 are expected "
        r"\(the name and 2 cells\), row 'B'",
    ):
        read_counts(tmp_path / "genes_by_cells.tsv.gz", transpose=True)


def test_bad_value_first_entry_in_transposed_table(tmp_path):
    counts = COUNTS.astype(np.float64)
    counts[2, 1] = -1.0
    path = _write_csv(tmp_path / "bad.tsv", counts, sep="\t", transpose=True)
    with pytest.raises(InputError, match=r"negative value -1\.0 at cell 'AACT-1', gene 'CD3E'"):
        read_counts(path, transpose=True)


def test_negative_in_h5ad_integer_layer(tmp_path):
    path = tmp_path / "neg.h5ad"
    src = _anndata()
    src.layers["counts"] = sp.csr_matrix(-COUNTS)
    src.write_h5ad(path)
    with pytest.raises(InputError, match="negative value -1 at cell 'AAAC-1', gene 'MT-CO1'"):
        read_counts(path, layer="counts")


def test_allow_non_integer(tmp_path):
    counts = COUNTS.astype(np.float64)
    counts[0, 0] = 0.25
    adata = read_counts(_write_csv(tmp_path / "ambient.csv", counts), allow_non_integer=True)
    assert adata.X[0, 0] == pytest.approx(0.25)


def test_non_integer_still_refuses_negative(tmp_path):
    counts = COUNTS.astype(np.float64)
    counts[0, 1] = -0.5
    with pytest.raises(InputError, match=r"negative value -0\.5"):
        read_counts(_write_csv(tmp_path / "neg.csv", counts), allow_non_integer=True)


def test_non_numeric_entry(tmp_path):
    path = tmp_path / "text.csv"
    path.write_text(",CD3E,CD8A\nc1,1,2\nc2,3,n/a?\nc3,x,1\n")
    with pytest.raises(InputError, match="non-numeric value 'n/a\\?' at cell 'c2', gene 'CD8A'"):
        read_counts(path)


# -- duplicated names ---------------------------------------------------------------------


def test_duplicate_genes_are_summed(tmp_path, caplog):
    genes = ["CD3E", "MT-CO1", "CD3E", "CD8A", "CD3E"]
    counts = np.array([[1, 0, 2, 0, 4], [0, 3, 0, 5, 1], [7, 0, 0, 1, 0]])
    path = _write_csv(tmp_path / "dups.csv", counts, genes=genes)
    with caplog.at_level(logging.WARNING, logger="geneattn.io.readers"):
        adata = read_counts(path)
    expected = np.array([[7, 0, 0], [1, 3, 5], [7, 0, 1]])
    _assert_counts(adata, counts=expected, genes=["CD3E", "MT-CO1", "CD8A"])
    assert "1 gene names are duplicated; summed their 3 columns into 1: CD3E" in caplog.text
    assert str(path) in caplog.text


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_genes_keep_first_var_row():
    adata = _anndata(genes=["A", "B", "A", "C"])
    adata.var["gene_ids"] = ["id0", "id1", "id2", "id3"]
    merged = sum_duplicate_genes(adata)
    assert merged.var["gene_ids"].tolist() == ["id0", "id1", "id3"]
    np.testing.assert_array_equal(merged.X.toarray(), [[4, 0, 0], [0, 2, 5], [4, 0, 1]])
    unique = _anndata()
    assert sum_duplicate_genes(unique) is unique


def test_duplicate_genes_in_10x_h5(tmp_path, caplog):
    path = _write_10x_h5(tmp_path / "dups.h5", genes=["A", "B", "A", "B"])
    with caplog.at_level(logging.WARNING, logger="geneattn.io.readers"):
        adata = read_counts(path)
    np.testing.assert_array_equal(adata.X.toarray(), [[4, 0], [0, 7], [4, 1]])
    assert "2 gene names are duplicated; summed their 4 columns into 2: A, B" in caplog.text


def test_duplicate_cells_made_unique(tmp_path, caplog):
    path = _write_csv(tmp_path / "cells.csv", cells=["c1", "c2", "c1"])
    with caplog.at_level(logging.WARNING, logger="geneattn.io.readers"):
        adata = read_counts(path)
    assert adata.obs_names.is_unique
    assert list(adata.obs_names) == ["c1", "c2", "c1-1"]
    assert "1 cell names are duplicated" in caplog.text
    np.testing.assert_array_equal(adata.X.toarray(), COUNTS)


# -- real data ----------------------------------------------------------------------------


def test_celltypist_sample_csv(resources_dir):
    """A real wide csv: 559 immune cells x 32,786 genes of raw counts, cells as rows."""
    adata = read_counts(resources_dir / "celltypist_sample_cell_by_gene.csv")
    assert adata.shape == (559, 32786)
    assert isinstance(adata.X, sp.csr_matrix)
    assert adata.X.dtype == np.float32
    assert adata.obs_names[0] == "Cell_1"
    assert adata.var_names[:3].tolist() == ["MIR1302-10", "FAM138A", "OR4F5"]
    assert adata.var_names.is_unique
    np.testing.assert_array_equal(adata.X.data, np.round(adata.X.data))
    assert int(adata.var_names.str.startswith("MT-").sum()) == 30  # 13 coding, 2 rRNA, 15 tRNA


# -- cell metadata joined by barcode (input.obs) -----------------------------------------

METADATA = "barcode,source,patient\nAACT-1,Blood,P2\nAAAC-1,Tumor,P1\nAAAG-1,NAT,P1\n"


def _write_format(fmt, tmp_path):
    """The toy counts in ``fmt``, without cell labels (as 10x and csv files come)."""
    if fmt == "h5ad":
        path = tmp_path / "counts.h5ad"
        ad.AnnData(
            sp.csr_matrix(COUNTS), obs=pd.DataFrame(index=CELLS), var=pd.DataFrame(index=GENES)
        ).write_h5ad(path)
        return path
    if fmt == "10x_h5":
        return _write_10x_h5(tmp_path / "filtered.h5")
    if fmt == "10x_mtx":
        return _write_mtx_dir(tmp_path / "filtered_feature_bc_matrix")
    if fmt == "loom":
        path = tmp_path / "counts.loom"
        ad.AnnData(
            sp.csr_matrix(COUNTS), obs=pd.DataFrame(index=CELLS), var=pd.DataFrame(index=GENES)
        ).write_loom(path)
        return path
    if fmt == "csv":
        return _write_csv(tmp_path / "counts.csv")
    return _write_csv(tmp_path / "counts.tsv.gz", sep="\t", transpose=True)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", ["meta.csv", "meta.tsv", "meta.tsv.gz"])
def test_cell_metadata_joined_for_every_format(tmp_path, fmt, table):
    counts = _write_format(fmt, tmp_path)
    meta = tmp_path / table
    text = METADATA if table == "meta.csv" else METADATA.replace(",", "\t")
    if table.endswith(".gz"):
        with gzip.open(meta, "wt") as fh:
            fh.write(text)
    else:
        meta.write_text(text)
    adata = read_counts(counts, fmt=fmt, transpose=fmt == "tsv", obs=meta)
    _assert_counts(adata)  # order of the counts, whatever the table's order
    assert adata.obs["source"].tolist() == ["Tumor", "NAT", "Blood"]
    assert adata.obs["patient"].tolist() == ["P1", "P1", "P2"]


def test_cell_metadata_replaces_a_column_of_the_file(tmp_path, caplog):
    path = tmp_path / "labelled.h5ad"
    _anndata().write_h5ad(path)  # obs.source: Tumor, NAT, Blood
    meta = tmp_path / "meta.tsv"
    meta.write_text("cell\tsource\nAAAC-1\tA\nAAAG-1\tB\nAACT-1\tC\nEXTRA-1\tD\n")
    with caplog.at_level(logging.INFO):
        adata = read_counts(path, obs=meta)
    assert adata.obs["source"].tolist() == ["A", "B", "C"]
    assert "replaces the column(s) 'source'" in caplog.text
    assert "1 of 4 rows are for cells not in the counts" in caplog.text


def test_cell_metadata_labels_stay_text(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("barcode,group,depth\nAAAC-1,1,007\nAAAG-1,2,\nAACT-1,1,3\n")
    adata = read_counts(_write_csv(tmp_path / "c.csv"), obs=meta)
    assert adata.obs["group"].tolist() == ["1", "2", "1"]
    assert adata.obs["depth"].iloc[0] == "007"
    assert pd.isna(adata.obs["depth"].iloc[1])


def test_cell_metadata_missing_cells(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("barcode,source\nAAAC,Tumor\nAAAG,NAT\nAACT,Blood\n")  # no -1 suffix
    with pytest.raises(InputError) as err:
        read_counts(_write_mtx_dir(tmp_path / "mtx"), obs=meta)
    message = str(err.value)
    assert message.startswith(f"{meta}: 3 of 3 cell barcodes of {tmp_path / 'mtx'} have no row")
    assert "first: 'AAAC-1', 'AAAG-1', 'AACT-1'" in message
    assert "the table's barcodes start 'AAAC', 'AAAG', 'AACT'" in message
    assert "\n" not in message


def test_cell_metadata_duplicated_barcodes(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("barcode,source\nAAAC-1,Tumor\nAAAG-1,NAT\nAAAC-1,NAT\nAACT-1,Blood\n")
    with pytest.raises(
        InputError,
        match=r"meta\.csv: 1 barcodes appear more than once in the cell metadata table "
        r"\(first: 'AAAC-1'\)",
    ):
        read_counts(_write_csv(tmp_path / "c.csv"), obs=meta)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("meta.xlsx", "x", "must be a .csv or .tsv table"),
        ("meta.csv", "", "the cell metadata table is empty"),
        ("meta.csv", "barcode\nAAAC-1\n", "has no annotation column"),
        ("meta.csv", "barcode,source\n", "has no rows"),
        ("meta.tsv", "barcode,source\nAAAC-1,T\n", "is it delimited by tabs"),
        ("meta.csv", "barcode,source\n,T\n", "has no barcode"),
    ],
)
def test_bad_cell_metadata_table(tmp_path, name, text, message):
    meta = tmp_path / name
    meta.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        read_counts(_write_csv(tmp_path / "c.csv"), obs=meta)
    assert str(err.value).startswith(str(meta))


def test_missing_cell_metadata_file(tmp_path):
    with pytest.raises(InputError, match="no such cell metadata file"):
        read_counts(_write_csv(tmp_path / "c.csv"), obs=tmp_path / "absent.tsv")


def test_read_obs_rows_equals_the_backed_obs_rows(tmp_path):
    """Only the asked rows of each column are read, in the asked order, with anndata's
    dtypes (categorical, numeric, strings, nullable integers, booleans)."""
    import anndata as ad
    import pandas as pd

    from geneattn.errors import InputError
    from geneattn.io.readers import read_obs_rows

    n = 40
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(rng.choice(["case", "control"], n)),
            "dose": pd.Categorical(rng.choice(["low", "high"], n), ordered=True),
            "n_counts": rng.random(n),
            "n_genes": rng.integers(0, 100, n).astype(np.int32),
            "barcode": [f"AC{i}" for i in range(n)],
            "batch": pd.array(rng.integers(0, 3, n), dtype="Int64"),
            "kept": rng.random(n) > 0.5,
        },
        index=[f"cell{i}" for i in range(n)],
    )
    path = tmp_path / "qc.h5ad"
    ad.AnnData(np.zeros((n, 2), dtype=np.float32), obs=obs).write_h5ad(path)
    ids = np.array(["cell7", "cell3", "cell39", "cell0", "cell3"])
    want = ad.read_h5ad(path, backed="r").obs.loc[ids]
    pd.testing.assert_frame_equal(read_obs_rows(path, ids), want)
    assert read_obs_rows(path, np.array([], dtype=str)).shape == (0, obs.shape[1])
    with pytest.raises(InputError, match=r"1 tokenized cells are not in it, e\.g\. 'nope'"):
        read_obs_rows(path, np.array(["cell1", "nope"]))
    # by the rows a tokens file records: the same frame, reading only those rows
    rows = np.array([7, 3, 39, 0, 3])
    pd.testing.assert_frame_equal(read_obs_rows(path, ids, rows=rows), want)
    with pytest.raises(InputError, match="not in it at the rows the tokens file records"):
        read_obs_rows(path, ids, rows=np.array([8, 3, 39, 0, 3]))
    with pytest.raises(InputError, match="1 tokenized cells are not in it"):
        read_obs_rows(path, ids[:1], rows=np.array([40]))
    with pytest.raises(InputError, match="file not found"):
        read_obs_rows(tmp_path / "missing.h5ad", ids)
