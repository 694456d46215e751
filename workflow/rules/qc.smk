# scanpy QC of the raw counts.


rule qc:
    input:
        counts=config["input"]["path"],
        obs=config["input"]["obs"] or [],
    output:
        h5ad=f"{OUT}/qc.h5ad",
        summary=f"{OUT}/qc_summary.json",
        plot=f"{OUT}/qc.png",
    params:
        fmt=config["input"]["format"],
        layer=opt("--layer", config["input"]["layer"]),
        transpose="--transpose" if config["input"]["transpose"] else "",
        obs=opt("--obs", config["input"]["obs"]),
        non_int="--allow-non-integer" if config["input"]["allow_non_integer"] else "",
        cond=(
            f"--condition-column {shlex.quote(CONDITION_COLUMN)} --keep "
            f"{shlex.quote(CONDITIONS['case'])} {shlex.quote(CONDITIONS['control'])}"
            if config["conditions"]
            else ""
        ),
        qc=config["qc"],
        max_counts=opt("--max-counts", config["qc"]["max_counts"]),
    threads: 1
    resources:
        mem_mb=mem_mb(1500, 20),
        runtime=runtime(10, 0.2),
    log:
        f"{LOGS}/qc.log",
    benchmark:
        f"{BENCH}/qc.tsv"
    conda:
        ENV
    shell:
        "geneattn qc {input.counts} --format {params.fmt} {params.layer} {params.transpose}"
        " {params.non_int} {params.obs} {params.cond}"
        " --min-genes {params.qc[min_genes]} --min-cells {params.qc[min_cells]}"
        " --max-pct-mito {params.qc[max_pct_mito]} {params.max_counts}"
        " --mito-prefix {params.qc[mito_prefix]:q}"
        " --out {output.h5ad} --summary {output.summary} --plot {output.plot}"
        " > {log} 2>&1"
