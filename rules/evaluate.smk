from core import launch


rule train_classifier:
    input:
        data=paths.dataset(R, "{dataset}"),
    output:
        weights=paths.classifier(R, "{dataset}"),
        info=paths.classifier(R, "{dataset}") + ".json",
    log:
        paths.log(R, "train_classifier", "{dataset}"),
    benchmark:
        paths.benchmark(R, "train_classifier", "{dataset}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code_param("train_classifier"),
        spec=lambda w: spec_json(PLAN.classifier_spec(w.dataset)),
    shell:
        "python -m core.stages.train_classifier --data {input.data:q} --spec {params.spec:q}"
        " --out {output.weights:q} --threads {threads:q} > {log:q} 2>&1"


rule reference_stats:
    input:
        data=paths.dataset(R, "{dataset}"),
        weights=lambda w: PLAN.extractor_for_tag(w.dataset, w.extractor).get(
            "weights", []
        ),
    output:
        paths.reference(R, "{dataset}", "{split}", "{extractor}", "{num}"),
    log:
        paths.log(R, "reference_stats", "{dataset}", "{split}-{extractor}-n{num}"),
    benchmark:
        paths.benchmark(R, "reference_stats", "{dataset}", "{split}-{extractor}-n{num}")
    wildcard_constraints:
        split="train|val",
        extractor="classifier|inception-pytorch-fid|inception-tf|inception-standin",
        num=r"\d+",
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=4000,
        runtime=60,
        gres=launch.gpu_gres(config["metrics"]["gpus"]),
        cpus_per_task=lambda w, threads: launch.cpus_per_node(
            threads, config["metrics"]["gpus"]
        ),
    params:
        code=code_param("reference_stats"),
        gpus=config["metrics"]["gpus"],
        extractor=lambda w: spec_json(PLAN.extractor_for_tag(w.dataset, w.extractor)),
        batch_size=config["metrics"]["batch_size"],
    shell:
        "python -m core.launch --gpus {params.gpus:q} reference_stats --data {input.data:q}"
        " --split {wildcards.split:q} --num-images {wildcards.num:q} --extractor {params.extractor:q}"
        " --batch-size {params.batch_size:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        samples=paths.samples(R, "{study}", "{experiment}", "{replicate}", "{step}"),
        reference=lambda w: PLAN.reference_file(w.study),
        weights=lambda w: PLAN.extractor_spec(w.study).get("weights", []),
    output:
        paths.metrics(R, "{study}", "{experiment}", "{replicate}", "{step}"),
    log:
        paths.log(R, "evaluate", "{study}", "{experiment}", "{replicate}", "{step}"),
    benchmark:
        paths.benchmark(
            R, "evaluate", "{study}", "{experiment}", "{replicate}", "{step}"
        )
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=4000,
        runtime=60,
        gres=launch.gpu_gres(config["metrics"]["gpus"]),
        cpus_per_task=lambda w, threads: launch.cpus_per_node(
            threads, config["metrics"]["gpus"]
        ),
    params:
        code=code_param("evaluate"),
        gpus=config["metrics"]["gpus"],
        extractor=lambda w: spec_json(PLAN.extractor_spec(w.study)),
        options=lambda w: spec_json(PLAN.evaluation_options(w.study)),
    shell:
        "python -m core.launch --gpus {params.gpus:q} evaluate --samples {input.samples:q}"
        " --reference {input.reference:q} --extractor {params.extractor:q} --options {params.options:q}"
        " --out {output:q} > {log:q} 2>&1"


# A row that picks one of several checkpoints is scored on a fresh draw at its pick (core.selection): one job per
# experiment replicate, on one process.
rule score_selected:
    input:
        metrics=lambda w: curve_files(w, paths.metrics),
        ckpt=lambda w: sample_inputs(w)["ckpt"],
        autoencoder=lambda w: sample_inputs(w).get("autoencoder", []),
        reference=lambda w: PLAN.reference_file(w.study),
        weights=lambda w: PLAN.extractor_spec(w.study).get("weights", []),
    output:
        samples=paths.selected_samples(R, "{study}", "{experiment}", "{replicate}"),
        metrics=paths.selected_metrics(R, "{study}", "{experiment}", "{replicate}"),
    log:
        paths.log(R, "score_selected", "{study}", "{experiment}", "{replicate}"),
    benchmark:
        paths.benchmark(R, "score_selected", "{study}", "{experiment}", "{replicate}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gres=lambda w: launch.gpu_gres(selected_gpus(w)),
        cpus_per_task=lambda w, threads: launch.cpus_per_node(threads, selected_gpus(w)),
    params:
        code=code_param("score_selected"),
        gpus=selected_gpus,
        spec=lambda w: spec_json(PLAN.selected_spec(w.study, w.experiment, rep(w))),
        extractor=lambda w: spec_json(PLAN.extractor_spec(w.study)),
        options=lambda w: spec_json(PLAN.evaluation_options(w.study)),
        autoencoder=lambda w, input: input.autoencoder or "",
    shell:
        "python -m core.launch --gpus {params.gpus:q} score_selected --metrics {input.metrics:q}"
        " --checkpoint-dir {input.ckpt:q} --spec {params.spec:q} --autoencoder={params.autoencoder:q}"
        " --reference {input.reference:q} --extractor {params.extractor:q} --options {params.options:q}"
        " --samples-out {output.samples:q} --out {output.metrics:q} --threads {threads:q} > {log:q} 2>&1"
