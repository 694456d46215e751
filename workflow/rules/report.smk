# One self-contained HTML report of the study (results/{study}/report.html).
# The resolved config (config.yaml or --configfile, schema defaults filled in, --config
# overrides applied) is passed as YAML on stdin, so the report shows what actually ran; being
# a param, it also makes Snakemake rebuild the report when the config changes.

import yaml


rule report:
    input:
        qc=rules.qc.output.h5ad,
        qc_summary=rules.qc.output.summary,
        embeddings=rules.embed.output[0],
        modules=rules.modules.output.modules,
        graph=DIFFERENTIAL.graphml,
        enrichment=rules.modules.output.enrichment,
        differential=DIFFERENTIAL.differential,
        evaluation=rules.evaluate.output[0],
        module_traits=rules.module_analysis.output.traits,
        module_preservation=rules.module_analysis.output.preservation,
        perturbation=rules.perturbation.output[0],
        skipped=rules.perturb_plan.output.skipped,
        gene_shifts=rules.gene_shifts.output[0] if config["perturb"]["gene_shifts"] else [],
    output:
        f"{OUT}/report.html",
    params:
        study=STUDY,
        config=yaml.safe_dump(config, sort_keys=False),
        fdr=config["evaluation"]["fdr"],
        gene_shifts=lambda wildcards, input: opt("--gene-shifts", input.gene_shifts or None),
    threads: 1
    resources:
        mem_mb=mem_mb(2000, 3),
        runtime=runtime(15, 0.1),
    log:
        f"{LOGS}/report.log",
    conda:
        ENV
    shell:
        "printf '%s' {params.config:q} | geneattn report --study {params.study:q} --config-yaml -"
        " --qc-summary {input.qc_summary} --qc {input.qc} --embeddings {input.embeddings}"
        " --modules {input.modules} --module-graph {input.graph}"
        " --enrichment {input.enrichment} --differential {input.differential}"
        " --evaluation {input.evaluation} --perturbation {input.perturbation} --fdr {params.fdr}"
        " --module-traits {input.module_traits}"
        " --module-preservation {input.module_preservation}"
        " --skipped {input.skipped}"
        " {params.gene_shifts}"
        " --threads {threads} --out {output} > {log} 2>&1"
