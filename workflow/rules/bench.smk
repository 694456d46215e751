# `snakemake --cores N bench` (or `make bench`): every benchmark; not part of `all`.
# The ratio suites (`geneattn bench all`) and the stage benchmark (`geneattn bench stages`:
# each stage's command line on the demo study's cells resampled to BENCH_SIZES cells) write
# their tables and plots under results/bench/; see README.md, "Benchmarks". Snakemake does
# not rerun it while its outputs exist: `make bench` forces it.

BENCH_SIZES = [1000, 10000, 100000]
# The demo config (config.yaml) with shorter cells, so that 100,000 cells take minutes, not
# hours, on 2 cores: the attention stages cost O(max_len^2) per cell.
BENCH_SETTINGS = ["tokenize.max_len=256"]
BENCH_OUT = "results/bench"


rule bench:
    input:
        demo=rules.fetch_resources.output.demo,
        tokens=rules.fetch_resources.output.tokens,
        medians=rules.fetch_resources.output.medians,
        names=rules.fetch_resources.output.names,
        ppi=rules.fetch_resources.output.ppi,
    output:
        suites=f"{BENCH_OUT}/suites.tsv",
        stages=f"{BENCH_OUT}/stages.tsv",
        jobs=f"{BENCH_OUT}/stage_jobs.tsv",
        scaling=f"{BENCH_OUT}/scaling.tsv",
        steps=f"{BENCH_OUT}/shard_steps.tsv",
        time_plot=f"{BENCH_OUT}/stages_time.png",
        rss_plot=f"{BENCH_OUT}/stages_rss.png",
    params:
        sizes=" ".join(str(n) for n in BENCH_SIZES),
        settings=" ".join(f"--set {s}" for s in BENCH_SETTINGS),
        out=lambda wildcards, output: os.path.dirname(output.stages),
        # the directory holding geneformer_v1/, genesets/, ppi/
        resources=lambda wildcards, input: os.path.dirname(os.path.dirname(input.tokens)),
    threads: 2
    log:
        "logs/bench.log",
    benchmark:
        "benchmarks/bench.tsv"
    conda:
        ENV
    shell:
        "(geneattn bench all --threads {threads} --tsv {output.suites}"
        " && geneattn bench stages --threads {threads} --sizes {params.sizes}"
        " --config config.yaml {params.settings} --resources {params.resources}"
        " --out-dir {params.out}) > {log} 2>&1"
