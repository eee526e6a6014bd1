rule make_dataset:
    input:
        dataset_source,
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
    threads: lambda w: 1 if config["datasets"][w.dataset]["source"] == "shapes" else 8
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=lambda w: as_json(config["datasets"][w.dataset]),
    shell:
        "python -m core.stages.make_dataset --spec {params.spec:q} --name {wildcards.dataset} --workers {threads}"
        " --out {output} > {log} 2>&1"
