rule make_dataset:
    input:
        dataset_source,
    output:
        paths.dataset(R, "{dataset}"),
    log:
        paths.log(R, "make_dataset", "{dataset}"),
    benchmark:
        paths.benchmark(R, "make_dataset", "{dataset}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: lambda w: 1 if PLAN.dataset_spec(w.dataset)["source"] == "shapes" else 8
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        code=code_param("make_dataset"),
        spec=lambda w: spec_json(PLAN.dataset_spec(w.dataset)),
        requirements=lambda w: spec_json(PLAN.dataset_requirements(w.dataset)),
        fingerprint=dataset_fingerprint,
    shell:
        "python -m core.stages.make_dataset --spec {params.spec:q} --requirements {params.requirements:q}"
        " --workers {threads:q} --out {output:q} > {log:q} 2>&1"
