# geneattn: raw counts -> QC -> rank-value tokens -> model -> embeddings and attention
# -> gene networks -> Leiden modules -> HTML report (see README.md).
# Every rule is thin: it calls the `geneattn` command line, which does the work.

from snakemake.utils import min_version, validate

min_version("9.19")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


# common.smk puts the running interpreter's bin directory on PATH (see there).
envvars:
    "PATH",


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"


# Paths and gene lists of the config, checked before any job runs and before the rules
# below use them (common.smk): one line per problem instead of a late failure.
check_config(fetched=rules.fetch_resources.output)


include: "workflow/rules/qc.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/network.smk"
include: "workflow/rules/perturb.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bench.smk"


# A failed job's error (from its log file) on the terminal, not only in logs/ (common.smk).
onerror:
    show_job_errors(log)


rule all:
    input:
        rules.qc.output,
        rules.tokenize.output,
        rules.embed.output,
        rules.modules.output,
        DIFFERENTIAL,
        rules.evaluate.output,
        rules.module_analysis.output,
        rules.perturb_plan.output.skipped,
        rules.perturbation.output,
        rules.gene_shifts.output if config["perturb"]["gene_shifts"] else [],
        rules.gene_embeddings.output if config["model"]["gene_embeddings"] else [],
        rules.report.output,
    default_target: True
