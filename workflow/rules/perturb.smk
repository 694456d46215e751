# In-silico perturbation: the genes (disease modules' hubs, a list, or the most expressed),
# null genes and the control centroid are chosen once (perturb_plan); the case cells are
# perturbed in shards; then goal-state statistics against the frequency-matched null genes.

# the perturbed cells: the case cells, or every cell of a single-condition study
PERTURB_CASE = CONDITIONS.get("case", "all")
PERTURB_CONTROL = opt("--control", CONDITIONS.get("control"))
# vs_null: the null study's gathered per-cell shifts, its perturbation_cells.tsv or the file
# named (check_config() checks it exists)
PERTURB_NULL = {}
if config["perturb"]["geneformer_table"] and config["perturb"]["geneformer_stats"] == "vs_null":
    PERTURB_NULL = {"null": null_study_file(config["perturb"]["null_study"])}


# Alternative end states (perturb.alt_states, Geneformer's alt_states): QC drops the cells of
# other labels, so their cells get their own QC, tokens and embeddings (same options and
# model); perturb_plan takes their state embeddings beside the control's.
ALT_STATES = config["perturb"]["alt_states"]
ALT = f"{OUT}/alt_states"

if ALT_STATES:

    use rule qc as alt_states_qc with:
        output:
            h5ad=f"{ALT}/qc.h5ad",
            summary=f"{ALT}/qc_summary.json",
            plot=f"{ALT}/qc.png",
        params:
            cond=f"--condition-column {shlex.quote(CONDITION_COLUMN)} --keep "
            + " ".join(shlex.quote(a) for a in ALT_STATES),
        log:
            f"{LOGS}/alt_states_qc.log",
        benchmark:
            f"{BENCH}/alt_states_qc.tsv"

    use rule tokenize as alt_states_tokenize with:
        input:
            h5ad=rules.alt_states_qc.output.h5ad,
            token_dict=rules.tokenize.input.token_dict,
            medians=rules.tokenize.input.medians,
            names=rules.tokenize.input.names,
            mapping=rules.tokenize.input.mapping,
        output:
            tokens=f"{ALT}/tokens.npz",
            summary=f"{ALT}/tokenize_summary.json",
        log:
            f"{LOGS}/alt_states_tokenize.log",
        benchmark:
            f"{BENCH}/alt_states_tokenize.tsv"

    rule alt_states_embed:
        input:
            tokens=rules.alt_states_tokenize.output.tokens,
            model=rules.model.output[0],
            h5ad=rules.alt_states_qc.output.h5ad,
        output:
            f"{ALT}/embeddings.h5ad",
        threads: 2
        resources:
            mem_mb=mem_mb(1000, 2),
            runtime=runtime(10, 0.1),
        log:
            f"{LOGS}/alt_states_embed.log",
        conda:
            ENV
        shell:
            "geneattn embed {input.tokens} --model {input.model} --obs {input.h5ad}"
            " --threads {threads} --out {output} > {log} 2>&1"


rule perturb_plan:
    input:
        tokens=rules.tokenize.output.tokens,
        h5ad=rules.qc.output.h5ad,
        embeddings=rules.embed.output[0],
        names=rules.fetch_resources.output.names,
        modules=rules.modules.output.modules,
        differential=DIFFERENTIAL.differential,
        **({"alt": f"{ALT}/embeddings.h5ad"} if ALT_STATES else {}),
    output:
        plan=f"{OUT}/perturbation/plan.npz",
        # the genes asked for (listed, or hubs passed over) that are not perturbed, and why
        skipped=f"{OUT}/perturbation/skipped.tsv",
    params:
        p=config["perturb"],
        column=CONDITION_COLUMN,
        case=PERTURB_CASE,
        control=PERTURB_CONTROL,
        genes=" ".join(shlex.quote(g) for g in config["perturb"]["genes"]),
        alt=lambda wildcards, input: " ".join(
            [f"--alt-state {shlex.quote(a)}" for a in ALT_STATES]
            + ([f"--alt-embeddings {shlex.quote(input.alt)}"] if ALT_STATES else [])
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(1000, 3),
        runtime=runtime(10, 0.05),
    log:
        f"{LOGS}/perturb_plan.log",
    conda:
        ENV
    shell:
        "geneattn perturb-plan {input.tokens} --obs {input.h5ad}"
        " --condition-column {params.column:q} --case {params.case:q} {params.control}"
        " --embeddings {input.embeddings} --gene-names {input.names}"
        " --modules {input.modules} --differential {input.differential}"
        " --genes-from {params.p[genes_from]} --genes {params.genes}"
        " --hubs-per-module {params.p[hubs_per_module]} --disease-fdr {params.p[disease_fdr]}"
        " --max-genes {params.p[max_genes]} --min-cells {params.p[min_cells]}"
        " --null-per-bin {params.p[null_per_bin]} --seed {params.p[seed]}"
        " --summary-stat {params.p[summary_stat]} {params.alt}"
        " --out {output.plan} --out-skipped {output.skipped} > {log} 2>&1"


rule perturb_shard:
    input:
        tokens=rules.tokenize.output.tokens,
        model=rules.model.output[0],
        h5ad=rules.qc.output.h5ad,
        plan=rules.perturb_plan.output.plan,
        names=rules.fetch_resources.output.names,
    output:
        shifts=temp(f"{OUT}/perturbation/shard{{shard}}.tsv"),
        **(
            {"genes": temp(f"{OUT}/perturbation/gene_shifts{{shard}}.npz")}
            if config["perturb"]["gene_shifts"]
            else {}
        ),
    params:
        p=config["perturb"],
        definition=config["perturb"]["definition"] or "auto",
        genes=lambda wildcards, output: opt("--gene-shifts", output.get("genes")),
        anchor=opt("--anchor", config["perturb"]["anchor_gene"]),
        groups=" ".join(
            f"--group {shlex.quote(','.join(g))}" for g in config["perturb"]["groups"]
        ),
        column=CONDITION_COLUMN,
        case=PERTURB_CASE,
        cells=CELLS_PER_SHARD,
    threads: 2
    resources:
        mem_mb=mem_mb(1000, 2),
        runtime=runtime(20, 0.5),
    log:
        f"{LOGS}/perturb_{{shard}}.log",
    benchmark:
        f"{BENCH}/perturb_{{shard}}.tsv"
    conda:
        ENV
    shell:
        "geneattn perturb {input.tokens} --model {input.model} --obs {input.h5ad}"
        " --condition-column {params.column:q} --case {params.case:q} --plan {input.plan}"
        " --mode {params.p[mode]} --shift {params.p[shift]}"
        " --definition {params.definition} {params.genes} {params.anchor} {params.groups}"
        " --gene-names {input.names}"
        " --shard {wildcards.shard} --cells-per-shard {params.cells} --threads {threads}"
        " --out {output.shifts} > {log} 2>&1"


rule perturbation:
    input:
        shards=lambda wc: expand(rules.perturb_shard.output[0], shard=shard_ids(PERTURB_CASE)),
        names=rules.fetch_resources.output.names,
        modules=rules.modules.output.modules,
        h5ad=rules.qc.output.h5ad,
        **PERTURB_NULL,
    output:
        table=f"{OUT}/perturbation.tsv",
        **(
            {"geneformer": f"{OUT}/perturbation_geneformer.tsv"}
            if config["perturb"]["geneformer_table"]
            else {}
        ),
        **(
            {"groups": f"{OUT}/perturbation_groups.tsv"}
            if config["perturb"]["groups"]
            else {}
        ),
        **(
            {"cells": f"{OUT}/perturbation_cells.tsv"}
            if config["perturb"]["geneformer_table"]
            else {}
        ),
    params:
        gf=lambda wildcards, output: (
            opt("--geneformer-out", output.get("geneformer"))
            + " "
            + opt("--cells-out", output.get("cells"))
            + " "
            + opt("--null-shifts", PERTURB_NULL.get("null"))
            + " "
            + opt("--geneformer-stats", config["perturb"]["geneformer_stats"])
            if config["perturb"]["geneformer_table"]
            else ""
        ),
        groups=lambda wildcards, output: opt("--groups-out", output.get("groups")),
        sample=opt("--sample-column", (config["conditions"] or {}).get("sample")),
        seed=config["perturb"]["seed"],
    threads: 1
    resources:
        mem_mb=mem_mb(1000, 5),
        runtime=runtime(10, 0.05),
    log:
        f"{LOGS}/perturbation.log",
    conda:
        ENV
    shell:
        "geneattn perturb-stats {input.shards} --gene-names {input.names}"
        " --modules {input.modules} --obs {input.h5ad} {params.sample} --seed {params.seed}"
        " --out {output.table} {params.gf} {params.groups} > {log} 2>&1"


# Geneformer's aggregate_gene_shifts: for each target gene, the cosine of every other gene's
# state with and without the perturbation, over the case cells (perturb.gene_shifts: true).
rule gene_shifts:
    input:
        shards=lambda wc: expand(
            f"{OUT}/perturbation/gene_shifts{{shard}}.npz", shard=shard_ids(PERTURB_CASE)
        ),
        tokens=rules.tokenize.output.tokens,
        names=rules.fetch_resources.output.names,
    output:
        f"{OUT}/gene_shifts.tsv",
    threads: 1
    resources:
        mem_mb=mem_mb(1000, 5),
        runtime=runtime(10, 0.05),
    log:
        f"{LOGS}/gene_shifts.log",
    conda:
        ENV
    shell:
        "geneattn gene-shifts {input.shards} --tokens {input.tokens}"
        " --gene-names {input.names} --out {output} > {log} 2>&1"
