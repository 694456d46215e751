# Attention (sharded over cells, gathered per condition) -> gene networks -> Leiden modules
# -> differential attention of the modules between case and control cells.

# Case-vs-control studies test modules by permuting cell labels (module_attention +
# differential rules), unless `modules.differential: genes` asks for the old gene-set test,
# which the modules rule runs itself. Single-condition studies get a differential table
# without rows from the modules rule.
CELL_TEST = "control" in CONDITIONS and config["modules"]["differential"] == "cells"


wildcard_constraints:
    role="case|control|all",
    shard=r"\d+",


rule universe:
    input:
        tokens=rules.tokenize.output.tokens,
        h5ad=rules.qc.output.h5ad,
        names=rules.fetch_resources.output.names,
    output:
        f"{OUT}/universe.tsv",
    params:
        # only the universe options: the attention mode does not change the universe
        a={k: v for k, v in config["attention"].items() if k.startswith("universe")},
    threads: 1
    resources:
        mem_mb=mem_mb(1500, 10),
        runtime=runtime(10, 0.1),
    log:
        f"{LOGS}/universe.log",
    benchmark:
        f"{BENCH}/universe.tsv"
    conda:
        ENV
    shell:
        "geneattn universe {input.tokens} --obs {input.h5ad} --gene-names {input.names}"
        " --universe {params.a[universe]} --min-cells {params.a[universe_min_cells]}"
        " --max-genes {params.a[universe_max_genes]} --out {output} > {log} 2>&1"


rule attention_shard:
    input:
        tokens=rules.tokenize.output.tokens,
        model=rules.model.output[0],
        h5ad=rules.qc.output.h5ad,
        universe=rules.universe.output[0],
    output:
        temp(f"{OUT}/attention/{{role}}.shard{{shard}}.npz"),
    params:
        column=CONDITION_COLUMN,
        label=lambda wc: CONDITIONS[wc.role],
        cells=CELLS_PER_SHARD,
    threads: 2
    resources:
        mem_mb=mem_mb(1500, 2),
        runtime=runtime(10, 0.2),
    log:
        f"{LOGS}/attention_{{role}}_{{shard}}.log",
    benchmark:
        f"{BENCH}/attention_{{role}}_{{shard}}.tsv"
    conda:
        ENV
    shell:
        "geneattn attention {input.tokens} --model {input.model} --obs {input.h5ad}"
        " --condition-column {params.column:q} --condition {params.label:q}"
        " --universe-table {input.universe}"
        " --shard {wildcards.shard} --cells-per-shard {params.cells}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule gather_attention:
    input:
        lambda wc: role_shards(rules.attention_shard.output[0], wc.role),
    output:
        f"{OUT}/attention/{{role}}.npz",
    threads: 1
    resources:
        mem_mb=mem_mb(1000, 3),
        runtime=runtime(10, 0.05),
    log:
        f"{LOGS}/gather_attention_{{role}}.log",
    conda:
        ENV
    shell:
        "geneattn gather-attention {input} --out {output} > {log} 2>&1"


rule network:
    input:
        sums=rules.gather_attention.output[0],
        ppi=rules.fetch_resources.output.ppi,
        h5ad=rules.qc.output.h5ad,
    output:
        npz=f"{OUT}/network/{{role}}.npz",
        edges=f"{OUT}/network/{{role}}_edges.tsv",
        graphml=f"{OUT}/network/{{role}}.graphml",
    params:
        n=config["network"],
        sym="--symmetrize" if config["network"]["symmetrize"] else "",
    threads: 1
    resources:
        mem_mb=mem_mb(2000, 4),
        runtime=runtime(10, 0.1),
    log:
        f"{LOGS}/network_{{role}}.log",
    benchmark:
        f"{BENCH}/network_{{role}}.tsv"
    conda:
        ENV
    shell:
        "geneattn network {input.sums} --min-cells {params.n[min_cells]}"
        " --top-k {params.n[top_k]} {params.sym} --diffusion {params.n[diffusion]}"
        " --prior {params.n[prior]} --ppi {input.ppi} --counts {input.h5ad}"
        " --alpha {params.n[alpha]} --t {params.n[t]} --iterations {params.n[iterations]}"
        " --out-npz {output.npz} --out-edges {output.edges} --out-graphml {output.graphml}"
        " > {log} 2>&1"


rule modules:
    input:
        # the case network and the control network, or the one network of the study
        **{role: f"{OUT}/network/{role}.npz" for role in ROLES},
        gmt=[f"{RES}/genesets/{g}" for g in config["modules"]["gene_sets"]],
    output:
        modules=f"{OUT}/modules.tsv",
        enrichment=f"{OUT}/enrichment.tsv",
        # with the cell-label test, the differential rule writes these two
        **(
            {}
            if CELL_TEST
            else {
                "differential": f"{OUT}/differential.tsv",
                "graphml": f"{OUT}/modules.graphml",
            }
        ),
    params:
        m=config["modules"],
        networks=(
            f"--case {OUT}/network/case.npz --control {OUT}/network/control.npz"
            if "control" in CONDITIONS
            else f"--case {OUT}/network/all.npz"
        ),
        outputs=lambda wildcards, output: " ".join(
            f"--out-{name} {output[name]}"
            for name in ("differential", "graphml")
            if name in output.keys()
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(2000, 4),
        runtime=runtime(20, 0.1),
    log:
        f"{LOGS}/modules.log",
    benchmark:
        f"{BENCH}/modules.tsv"
    conda:
        ENV
    shell:
        "geneattn modules {params.networks}"
        " --detect-on {params.m[detect_on]} --objective {params.m[objective]}"
        " --resolution {params.m[resolution]} --seed {params.m[seed]}"
        " --min-size {params.m[min_size]} --gmt {input.gmt}"
        " --permutations {params.m[permutations]}"
        " --out-modules {output.modules} --out-enrichment {output.enrichment}"
        " {params.outputs} > {log} 2>&1"


# hdWGCNA-style analysis of the modules: eigengenes per cell, kME and hubs by kME, the
# module-condition association (per sample with conditions.sample) and the preservation of
# each module's structure from the control network's mean attention to the case network's.
rule module_analysis:
    input:
        modules=rules.modules.output.modules,
        h5ad=rules.qc.output.h5ad,
        **({role: f"{OUT}/network/{role}.npz" for role in ROLES} if "control" in CONDITIONS else {}),
    output:
        kme=f"{OUT}/module_kme.tsv",
        eigengenes=f"{OUT}/module_eigengenes.tsv",
        traits=f"{OUT}/module_traits.tsv",
        preservation=f"{OUT}/module_preservation.tsv",
    params:
        m=config["modules"],
        column=CONDITION_COLUMN,
        labels=(
            f"--case {shlex.quote(str(CONDITIONS['case']))}"
            f" --control {shlex.quote(str(CONDITIONS['control']))}"
            if "control" in CONDITIONS
            else f"--case {shlex.quote(str(CONDITIONS['all']))}"
        ),
        networks=lambda wildcards, input: (
            f"--case-network {input.case} --control-network {input.control}"
            if "control" in input.keys()
            else ""
        ),
        sample=opt("--sample-column", (config["conditions"] or {}).get("sample")),
    threads: 1
    resources:
        mem_mb=mem_mb(1500, 4),
        runtime=runtime(10, 0.1),
    log:
        f"{LOGS}/module_analysis.log",
    benchmark:
        f"{BENCH}/module_analysis.tsv"
    conda:
        ENV
    shell:
        "geneattn module-analysis --modules {input.modules} --counts {input.h5ad}"
        " --condition-column {params.column:q} {params.labels} {params.sample}"
        " {params.networks} --min-kme {params.m[min_kme]}"
        " --trait-permutations {params.m[trait_permutations]}"
        " --preservation-permutations {params.m[preservation_permutations]}"
        " --seed {params.m[seed]} --out-kme {output.kme} --out-eigengenes {output.eigengenes}"
        " --out-traits {output.traits} --out-preservation {output.preservation} > {log} 2>&1"


if CELL_TEST:

    rule module_attention:
        input:
            tokens=rules.tokenize.output.tokens,
            model=rules.model.output[0],
            h5ad=rules.qc.output.h5ad,
            modules=rules.modules.output.modules,
        output:
            f"{OUT}/module_attention/{{role}}.shard{{shard}}.npz",
        params:
            column=CONDITION_COLUMN,
            label=lambda wc: CONDITIONS[wc.role],
            cells=CELLS_PER_SHARD,
        threads: 2
        resources:
            mem_mb=mem_mb(1000, 2),
            runtime=runtime(10, 0.2),
        log:
            f"{LOGS}/module_attention_{{role}}_{{shard}}.log",
        benchmark:
            f"{BENCH}/module_attention_{{role}}_{{shard}}.tsv"
        conda:
            ENV
        shell:
            "geneattn module-attention {input.tokens} --model {input.model} --obs {input.h5ad}"
            " --condition-column {params.column:q} --condition {params.label:q}"
            " --modules {input.modules} --shard {wildcards.shard} --cells-per-shard {params.cells}"
            " --threads {threads} --out {output} > {log} 2>&1"

    rule differential:
        input:
            case=lambda wc: role_shards(rules.module_attention.output[0], "case"),
            control=lambda wc: role_shards(rules.module_attention.output[0], "control"),
            modules=rules.modules.output.modules,
            case_network=f"{OUT}/network/case.npz",
            control_network=f"{OUT}/network/control.npz",
        output:
            differential=f"{OUT}/differential.tsv",
            graphml=f"{OUT}/modules.graphml",
        params:
            m=config["modules"],
        threads: 1
        resources:
            mem_mb=mem_mb(1000, 3),
            runtime=runtime(10, 0.1),
        log:
            f"{LOGS}/differential.log",
        benchmark:
            f"{BENCH}/differential.tsv"
        conda:
            ENV
        shell:
            "geneattn differential --case-cells {input.case} --control-cells {input.control}"
            " --permutations {params.m[permutations]} --seed {params.m[seed]}"
            " --out {output.differential} --modules {input.modules}"
            " --case {input.case_network} --control {input.control_network}"
            " --detect-on {params.m[detect_on]} --out-graphml {output.graphml} > {log} 2>&1"


# The differential table and the module GraphML, from whichever rule writes them.
DIFFERENTIAL = rules.differential.output if CELL_TEST else rules.modules.output


rule evaluate:
    input:
        modules=rules.modules.output.modules,
        enrichment=rules.modules.output.enrichment,
        h5ad=rules.qc.output.h5ad,
        embeddings=rules.embed.output[0],
        markers=rules.fetch_resources.output.markers,
    output:
        table=f"{OUT}/evaluation.tsv",
        coexpression=f"{OUT}/coexpression_modules.tsv",
    params:
        e=config["evaluation"],
        m=config["modules"],
        top_k=config["network"]["top_k"],
        labels=opt("--label-column", config["evaluation"]["label_column"]),
        programs=" ".join(
            f"--program {shlex.quote(name + '=' + ','.join(genes))}"
            for name, genes in config["evaluation"]["programs"].items()
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=runtime(10),
    log:
        f"{LOGS}/evaluate.log",
    conda:
        ENV
    shell:
        "geneattn evaluate --modules {input.modules} --enrichment {input.enrichment}"
        " {params.programs} --fdr {params.e[fdr]} --permutations {params.e[permutations]}"
        " --counts {input.h5ad} --markers {input.markers} --embeddings {input.embeddings}"
        " {params.labels} --resolution {params.m[resolution]} --objective {params.m[objective]}"
        " --min-size {params.m[min_size]} --top-k {params.top_k} --seed {params.m[seed]}"
        " --coexpression-out {output.coexpression} --out {output.table} > {log} 2>&1"
