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
        requirements=lambda w: spec_json(requirements.of_dataset(PLAN, w.dataset)),
        fingerprint=dataset_fingerprint,
    shell:
        "python -m core.stages.make_dataset --spec {params.spec:q} --requirements {params.requirements:q}"
        " --workers {threads:q} --out {output:q} > {log:q} 2>&1"


# A rehearsal's stand-in for an image-folder dataset (core/rehearsal.py): a synthetic tree in the dataset's layout.
rule standin_data:
    output:
        directory(paths.standin(R, "{dataset}")),
    log:
        paths.log(R, "standin_data", "{dataset}"),
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code_param("standin_data"),
        spec=lambda w: spec_json(PLAN.standin(w.dataset)["spec"]),
        layout=lambda w: PLAN.standin(w.dataset)["layout"],
    shell:
        "python -m core.stages.standin_data --layout {params.layout:q} --spec {params.spec:q}"
        " --out {output:q} > {log:q} 2>&1"
