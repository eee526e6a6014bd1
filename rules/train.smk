# A checkpoint rule: experiments that sample every checkpoint of an early-stopping model learn which steps
# exist once the model is trained (rules/common.smk: experiment_steps).
checkpoint train:
    input:
        data=lambda w: cfg.train_data_path(config, w.study, w.model),
    output:
        ckpt=directory(f"{R}/{{study}}/models/{{model}}/ckpt"),
        log=f"{R}/{{study}}/models/{{model}}/train_log.csv",
    log:
        f"{R}/logs/train/{{study}}/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{study}}/{{model}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=lambda w: cfg.train_resources(config, w.study, w.model)["gpus"],
        nodes=lambda w: cfg.train_resources(config, w.study, w.model)["nodes"],
        tasks=lambda w: cfg.train_resources(config, w.study, w.model)["nodes"],
    params:
        spec=lambda w: as_json(cfg.model_spec(config, w.study, w.model)),
        out_dir=lambda w: cfg.model_dir(config, w.study, w.model),
        launch=lambda w: launcher(**cfg.train_resources(config, w.study, w.model)),
        compile_cache=f"{R}/cache/inductor",
    shell:
        "{params.launch} -m core.stages.train --spec {params.spec:q} --data {input.data} --out-dir {params.out_dir}"
        " --threads {threads} --compile-cache {params.compile_cache} >> {log} 2>&1"
