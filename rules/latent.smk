rule train_autoencoder:
    input:
        data=lambda w: paths.dataset(R, PLAN.autoencoder_spec(w.ae)["dataset"]),
    output:
        vae=paths.autoencoder(R, "{ae}"),
        log=paths.autoencoder_log(R, "{ae}"),
    log:
        paths.log(R, "train_autoencoder", "{ae}"),
    benchmark:
        paths.benchmark(R, "train_autoencoder", "{ae}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=1440,
    params:
        code=code_param("train_autoencoder"),
        spec=lambda w: spec_json(PLAN.autoencoder_spec(w.ae)),
    shell:
        "python -m core.stages.train_autoencoder --spec {params.spec:q} --data {input.data:q}"
        " --out {output.vae:q} --log {output.log:q} --threads {threads:q} > {log:q} 2>&1"


rule encode_latents:
    input:
        data=lambda w: paths.dataset(R, PLAN.autoencoder_spec(w.ae)["dataset"]),
        vae=paths.autoencoder(R, "{ae}"),
    output:
        paths.latents(R, "{ae}"),
    log:
        paths.log(R, "encode_latents", "{ae}"),
    benchmark:
        paths.benchmark(R, "encode_latents", "{ae}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        code=code_param("encode_latents"),
        rehearsal=config["rehearsal"]["encode_images"] if PLAN.rehearse else 0,
    shell:
        "python -m core.stages.encode_latents --data {input.data:q} --autoencoder {input.vae:q}"
        " --out {output:q} --threads {threads:q} --rehearsal-images {params.rehearsal:q} > {log:q} 2>&1"


rule evaluate_autoencoder:
    input:
        vae=paths.autoencoder(R, "{ae}"),
        data=lambda w: paths.dataset(R, PLAN.dataset_of(w.study)),
        reference=lambda w: PLAN.reference_file(w.study),
        weights=lambda w: PLAN.extractor_spec(w.study).get("weights", []),
    output:
        metrics=paths.autoencoder_report(R, "{study}", "{ae}", "json"),
        grid=paths.autoencoder_report(R, "{study}", "{ae}", "png"),
    log:
        paths.log(R, "evaluate_autoencoder", "{study}", "{ae}"),
    benchmark:
        paths.benchmark(R, "evaluate_autoencoder", "{study}", "{ae}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code_param("evaluate_autoencoder"),
        split=lambda w: PLAN.study(w.study)["evaluation"]["reference_split"],
        num=lambda w: PLAN.autoencoder_eval_images(w.study),
        extractor=lambda w: spec_json(PLAN.extractor_spec(w.study)),
        batch_size=config["metrics"]["batch_size"],
    shell:
        "python -m core.stages.evaluate_autoencoder --autoencoder {input.vae:q} --data {input.data:q}"
        " --split {params.split:q} --num-images {params.num:q} --reference {input.reference:q}"
        " --extractor {params.extractor:q} --batch-size {params.batch_size:q} --out {output.metrics:q}"
        " --grid {output.grid:q} --threads {threads:q} > {log:q} 2>&1"
