rule train_autoencoder:
    input:
        data=lambda w: cfg.dataset_path(config, config["autoencoders"][w.ae]["dataset"]),
    output:
        vae=f"{R}/autoencoders/{{ae}}/vae.pt",
        log=f"{R}/autoencoders/{{ae}}/train_log.csv",
    log:
        f"{R}/logs/train_autoencoder/{{ae}}.log",
    benchmark:
        f"{R}/benchmarks/train_autoencoder/{{ae}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=1440,
    params:
        spec=lambda w: as_json({"name": w.ae, **config["autoencoders"][w.ae]}),
    shell:
        "python -m core.stages.train_autoencoder --spec {params.spec:q} --data {input.data} --out {output.vae}"
        " --log {output.log} --threads {threads} > {log} 2>&1"


rule encode_latents:
    input:
        data=lambda w: cfg.dataset_path(config, config["autoencoders"][w.ae]["dataset"]),
        vae=f"{R}/autoencoders/{{ae}}/vae.pt",
    output:
        f"{R}/latents/{{ae}}.h5",
    log:
        f"{R}/logs/encode_latents/{{ae}}.log",
    benchmark:
        f"{R}/benchmarks/encode_latents/{{ae}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "python -m core.stages.encode_latents --data {input.data} --autoencoder {input.vae} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule evaluate_autoencoder:
    input:
        vae=f"{R}/autoencoders/{{ae}}/vae.pt",
        data=lambda w: cfg.dataset_path(config, config["studies"][w.study]["dataset"]),
        reference=lambda w: cfg.reference_path(config, w.study),
        weights=lambda w: extractor_spec(w.study)["weights"],
    output:
        metrics=f"{R}/{{study}}/autoencoders/{{ae}}.json",
        grid=f"{R}/{{study}}/autoencoders/{{ae}}.png",
    log:
        f"{R}/logs/evaluate_autoencoder/{{study}}/{{ae}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_autoencoder/{{study}}/{{ae}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        split=lambda w: config["studies"][w.study]["evaluation"]["reference_split"],
        num=lambda w: config["studies"][w.study]["evaluation"]["reference_num"],
        extractor=lambda w: as_json(extractor_spec(w.study)),
        batch_size=config["metrics"]["batch_size"],
    shell:
        "python -m core.stages.evaluate_autoencoder --autoencoder {input.vae} --data {input.data}"
        " --split {params.split} --num-images {params.num} --reference {input.reference}"
        " --extractor {params.extractor:q} --batch-size {params.batch_size} --out {output.metrics}"
        " --grid {output.grid} --threads {threads} > {log} 2>&1"
