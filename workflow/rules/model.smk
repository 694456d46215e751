# The attention model (study-derived weights) and the cell embeddings.


rule model:
    input:
        h5ad=rules.qc.output.h5ad,
        token_dict=rules.fetch_resources.output.tokens,
        names=rules.fetch_resources.output.names,
    output:
        f"{OUT}/model.npz",
    params:
        gene_id=config["input"]["gene_id"],
        m=config["model"],
    log:
        f"{LOGS}/model.log",
    benchmark:
        f"{BENCH}/model.tsv"
    conda:
        ENV
    shell:
        "geneattn model {input.h5ad} --token-dictionary {input.token_dict}"
        " --gene-names {input.names} --gene-id {params.gene_id}"
        " --d-model {params.m[d_model]} --n-heads {params.m[n_heads]}"
        " --temperature {params.m[temperature]} --seed {params.m[seed]}"
        " --out {output} > {log} 2>&1"


rule embed:
    input:
        tokens=rules.tokenize.output.tokens,
        model=rules.model.output[0],
        h5ad=rules.qc.output.h5ad,
    output:
        f"{OUT}/embeddings.h5ad",
    threads: 2
    log:
        f"{LOGS}/embed.log",
    benchmark:
        f"{BENCH}/embed.tsv"
    conda:
        ENV
    shell:
        "geneattn embed {input.tokens} --model {input.model} --obs {input.h5ad}"
        " --threads {threads} --out {output} > {log} 2>&1"
