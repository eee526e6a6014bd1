rule train:
    input:
        data=lambda w: cfg.dataset_path(config, config["studies"][w.study]["dataset"]),
    output:
        ckpt=directory(f"{R}/{{study}}/models/{{model}}/ckpt"),
        log=f"{R}/{{study}}/models/{{model}}/train_log.csv",
    log:
        f"{R}/logs/train/{{study}}/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{study}}/{{model}}.tsv"
    conda:
        "../envs/environment.yaml"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=1440,
    params:
        spec=lambda w: as_json(cfg.model_spec(config, w.study, w.model)),
        out_dir=lambda w: cfg.model_dir(config, w.study, w.model),
    shell:
        "python -m core.train --spec {params.spec:q} --data {input.data} --out-dir {params.out_dir}"
        " --threads {threads} >> {log} 2>&1"
