rule train_classifier:
    input:
        data=f"{R}/data/{{dataset}}.h5",
    output:
        weights=f"{R}/extractors/{{dataset}}-classifier.pt",
        info=f"{R}/extractors/{{dataset}}-classifier.pt.json",
    log:
        f"{R}/logs/train_classifier/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/train_classifier/{{dataset}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=lambda w: as_json(
            next(
                cfg.classifier_spec(config, s)
                for s, st in config["studies"].items()
                if st["dataset"] == w.dataset
            )
        ),
    shell:
        "python -m core.stages.train_classifier --data {input.data} --spec {params.spec:q} --out {output.weights}"
        " --threads {threads} > {log} 2>&1"


rule reference_stats:
    input:
        data=f"{R}/data/{{dataset}}.h5",
        weights=lambda w: extractor_for_tag(w.dataset, w.extractor)["weights"],
    output:
        f"{R}/refstats/{{dataset}}/{{split}}-{{extractor}}-n{{num}}.npz",
    log:
        f"{R}/logs/reference_stats/{{dataset}}/{{split}}-{{extractor}}-n{{num}}.log",
    benchmark:
        f"{R}/benchmarks/reference_stats/{{dataset}}/{{split}}-{{extractor}}-n{{num}}.tsv"
    wildcard_constraints:
        split="train|val",
        extractor="classifier|inception-pytorch-fid|inception-tf",
        num=r"\d+",
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["metrics"]["gpus"],
    params:
        launch=launcher(config["metrics"]["gpus"]),
        extractor=lambda w: as_json(extractor_for_tag(w.dataset, w.extractor)),
        batch_size=config["metrics"]["batch_size"],
    shell:
        "{params.launch} -m core.stages.reference_stats --data {input.data} --split {wildcards.split} --num-images {wildcards.num}"
        " --extractor {params.extractor:q} --batch-size {params.batch_size} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        samples=f"{R}/{{study}}/samples/{{experiment}}/{{step}}.h5",
        reference=lambda w: cfg.reference_path(config, w.study),
        weights=lambda w: extractor_spec(w.study)["weights"],
    output:
        f"{R}/{{study}}/metrics/{{experiment}}/{{step}}.json",
    log:
        f"{R}/logs/evaluate/{{study}}/{{experiment}}/{{step}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{study}}/{{experiment}}/{{step}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["metrics"]["gpus"],
    params:
        launch=launcher(config["metrics"]["gpus"]),
        extractor=lambda w: as_json(extractor_spec(w.study)),
        options=lambda w: as_json(evaluation_options(w.study)),
    shell:
        "{params.launch} -m core.stages.evaluate --samples {input.samples} --reference {input.reference}"
        " --extractor {params.extractor:q} --options {params.options:q} --out {output} > {log} 2>&1"
