# The attention model (study-derived weights, or a pretrained checkpoint's manifest) and the
# cell embeddings (sharded over cells).


if config["model"]["kind"] == "checkpoint":

    rule model:
        input:
            # the checkpoint's files, so that new weights rerun everything after them
            config=os.path.join(config["model"]["path"], "config.json"),
            weights=CHECKPOINT_WEIGHTS,
        output:
            f"{OUT}/model.json",
        params:
            m=config["model"],
            path=config["model"]["path"],
            extra=" ".join(
                [
                    opt("--checkpoint-token-dictionary", config["model"]["token_dictionary"]),
                    opt("--version", config["model"]["version"]),
                    (
                        "--attention-heads "
                        + " ".join(str(h) for h in config["model"]["attention_heads"])
                        if config["model"]["attention_heads"]
                        else ""
                    ),
                ]
            ),
        threads: 1
        resources:
            mem_mb=mem_mb(1000, 2),
            runtime=runtime(10, 0.01),
        log:
            f"{LOGS}/model.log",
        benchmark:
            f"{BENCH}/model.tsv"
        conda:
            ENV
        shell:
            "geneattn model --checkpoint {params.path:q} {params.extra}"
            " --emb-layer {params.m[emb_layer]} --pooling {params.m[pooling]}"
            " --attention-layer {params.m[attention_layer]} --out {output} > {log} 2>&1"

else:

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
        threads: 2
        resources:
            mem_mb=mem_mb(1500, 10),
            runtime=runtime(10, 0.1),
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


rule embed_shard:
    input:
        tokens=rules.tokenize.output.tokens,
        model=rules.model.output[0],
        h5ad=rules.qc.output.h5ad,
    output:
        shard=temp(f"{OUT}/embeddings/shard{{shard}}.h5ad"),
        **(
            {"genes": temp(f"{OUT}/embeddings/gene_sums{{shard}}.npz")}
            if config["model"]["gene_embeddings"]
            else {}
        ),
    params:
        cells=CELLS_PER_SHARD,
        genes=lambda wildcards, output: opt("--gene-sums", output.get("genes")),
    threads: 2
    resources:
        mem_mb=mem_mb(1000, 2),
        runtime=runtime(10, 0.1),
    log:
        f"{LOGS}/embed_{{shard}}.log",
    benchmark:
        f"{BENCH}/embed_{{shard}}.tsv"
    conda:
        ENV
    shell:
        "geneattn embed {input.tokens} --model {input.model} --obs {input.h5ad}"
        " --shard {wildcards.shard} --cells-per-shard {params.cells}"
        " --threads {threads} --out {output.shard} {params.genes} > {log} 2>&1"


rule embed:
    input:
        lambda wildcards: expand(rules.embed_shard.output[0], shard=shard_ids()),
    output:
        f"{OUT}/embeddings.h5ad",
    threads: 1
    resources:
        mem_mb=mem_mb(1000, 3),
        runtime=runtime(10, 0.05),
    log:
        f"{LOGS}/embed.log",
    conda:
        ENV
    shell:
        "geneattn gather-embeddings {input} --out {output} > {log} 2>&1"


# Geneformer's emb_mode gene: each gene's contextual state averaged over every cell
# (model.gene_embeddings: true).
rule gene_embeddings:
    input:
        shards=lambda wildcards: expand(
            f"{OUT}/embeddings/gene_sums{{shard}}.npz", shard=shard_ids()
        ),
        tokens=rules.tokenize.output.tokens,
        names=rules.fetch_resources.output.names,
    output:
        f"{OUT}/gene_embeddings.tsv",
    threads: 1
    resources:
        mem_mb=mem_mb(1000, 5),
        runtime=runtime(10, 0.05),
    log:
        f"{LOGS}/gene_embeddings.log",
    conda:
        ENV
    shell:
        "geneattn gather-gene-embeddings {input.shards} --tokens {input.tokens}"
        " --gene-names {input.names} --out {output} > {log} 2>&1"
