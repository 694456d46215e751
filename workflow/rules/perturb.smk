# In-silico perturbation of the disease modules' hub genes in the case cells (sharded),
# then goal-state statistics against frequency-matched random genes.

PERTURB_SHARDS = range(config["perturb"]["shards"])
# the perturbed cells: the case cells, or every cell of a single-condition study
PERTURB_CASE = CONDITIONS.get("case", "all")
PERTURB_CONTROL = opt("--control", CONDITIONS.get("control"))


rule perturb_shard:
    input:
        tokens=rules.tokenize.output.tokens,
        model=rules.model.output[0],
        h5ad=rules.qc.output.h5ad,
        names=rules.fetch_resources.output.names,
        modules=rules.modules.output.modules,
        differential=DIFFERENTIAL.differential,
    output:
        temp(f"{OUT}/perturbation/shard{{shard}}.tsv"),
    params:
        p=config["perturb"],
        column=CONDITION_COLUMN,
        case=PERTURB_CASE,
        control=PERTURB_CONTROL,
        genes=" ".join(shlex.quote(g) for g in config["perturb"]["genes"]),
        n_shards=config["perturb"]["shards"],
    threads: 2
    log:
        f"{LOGS}/perturb_{{shard}}.log",
    benchmark:
        f"{BENCH}/perturb_{{shard}}.tsv"
    conda:
        ENV
    shell:
        "geneattn perturb {input.tokens} --model {input.model} --obs {input.h5ad}"
        " --condition-column {params.column:q} --case {params.case:q} {params.control}"
        " --gene-names {input.names} --modules {input.modules}"
        " --differential {input.differential} --genes-from {params.p[genes_from]}"
        " --genes {params.genes} --hubs-per-module {params.p[hubs_per_module]}"
        " --disease-fdr {params.p[disease_fdr]} --max-genes {params.p[max_genes]}"
        " --min-cells {params.p[min_cells]} --mode {params.p[mode]} --shift {params.p[shift]}"
        " --null-per-bin {params.p[null_per_bin]} --seed {params.p[seed]}"
        " --shard {wildcards.shard} --n-shards {params.n_shards} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule perturbation:
    input:
        shards=expand(f"{OUT}/perturbation/shard{{shard}}.tsv", shard=PERTURB_SHARDS),
        names=rules.fetch_resources.output.names,
        modules=rules.modules.output.modules,
    output:
        f"{OUT}/perturbation.tsv",
    log:
        f"{LOGS}/perturbation.log",
    conda:
        ENV
    shell:
        "geneattn perturb-stats {input.shards} --gene-names {input.names}"
        " --modules {input.modules} --out {output} > {log} 2>&1"
