rule make_dataset:
    output:
        f"{R}/data/{{dataset}}.h5",
    log:
        f"{R}/logs/make_dataset/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/make_dataset/{{dataset}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=lambda w: as_json(config["datasets"][w.dataset]),
    shell:
        "python -m core.make_dataset --spec {params.spec:q} --out {output} > {log} 2>&1"
