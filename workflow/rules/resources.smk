# Pinned real data from PyPI wheels, checked by sha256 (resources/MANIFEST).


rule fetch_resources:
    output:
        demo=f"{RES}/wu2020_200.h5ad",
        tokens=f"{RES}/geneformer_v1/token_dictionary.tsv",
        medians=f"{RES}/geneformer_v1/gene_median_dictionary.tsv",
        names=f"{RES}/geneformer_v1/gene_name_id.tsv",
        ppi=f"{RES}/ppi/h_sapiens.tsv",
        hallmark=f"{RES}/genesets/hallmark.gmt",
        markers=f"{RES}/genesets/human_immune_cell_markers.json",
        second=f"{RES}/celltypist_sample_cell_by_gene.csv",
    log:
        f"logs/fetch_resources.log",
    conda:
        ENV
    shell:
        "geneattn fetch-resources --dest {RES} > {log} 2>&1"
