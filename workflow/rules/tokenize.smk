# Geneformer V1 rank-value encoding of the QC'd counts. A checkpoint: the number of cells it
# keeps per condition decides how many shards the sharded stages run (common.smk).


TOKENIZE = config["tokenize"]


checkpoint tokenize:
    input:
        h5ad=rules.qc.output.h5ad,
        token_dict=TOKENIZE.get("token_dictionary_file") or rules.fetch_resources.output.tokens,
        medians=TOKENIZE.get("gene_median_file") or rules.fetch_resources.output.medians,
        names=rules.fetch_resources.output.names,
        mapping=TOKENIZE.get("gene_mapping_file") or [],
    output:
        tokens=f"{OUT}/tokens.npz",
        summary=f"{OUT}/tokenize_summary.json",
    params:
        gene_id=config["input"]["gene_id"],
        medians=config["tokenize"]["medians"],
        max_len=config["tokenize"]["max_len"],
        column=CONDITION_COLUMN,
        mapping=lambda wildcards, input: opt("--gene-mapping", input.mapping or None),
        attributes=" ".join(
            f"--attribute {shlex.quote(f'{col}={name}')}"
            for col, name in TOKENIZE["custom_attributes"].items()
        ),
    threads: 2
    resources:
        mem_mb=mem_mb(1000, 8),
        runtime=runtime(10, 0.1),
    log:
        f"{LOGS}/tokenize.log",
    benchmark:
        f"{BENCH}/tokenize.tsv"
    conda:
        ENV
    shell:
        "geneattn tokenize {input.h5ad} --token-dictionary {input.token_dict}"
        " --medians-file {input.medians} --gene-names {input.names}"
        " --gene-id {params.gene_id} --medians {params.medians} --max-len {params.max_len}"
        " --condition-column {params.column:q} {params.mapping} {params.attributes}"
        " --threads {threads} --out {output.tokens} --summary {output.summary}"
        " > {log} 2>&1"
