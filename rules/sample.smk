rule sample:
    input:
        unpack(sample_inputs),
    output:
        f"{R}/{{study}}/samples/{{experiment}}/{{step}}.h5",
    log:
        f"{R}/logs/sample/{{study}}/{{experiment}}/{{step}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{study}}/{{experiment}}/{{step}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: cfg.sample_gpus(config, w.study, w.experiment),
    params:
        spec=lambda w: as_json(cfg.experiment_spec(config, w.study, w.experiment)),
        launch=lambda w: launcher(cfg.sample_gpus(config, w.study, w.experiment)),
        autoencoder=lambda w, input: (
            f"--autoencoder {input.autoencoder}"
            if "autoencoder" in input.keys()
            else ""
        ),
    shell:
        "{params.launch} -m core.stages.sample --checkpoint {input.ckpt}/{wildcards.step}.pt --spec {params.spec:q}"
        " {params.autoencoder} --out {output} --threads {threads} >> {log} 2>&1"
