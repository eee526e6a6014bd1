rule sample:
    input:
        ckpt=checkpoint_dir,
    output:
        f"{R}/{{study}}/samples/{{experiment}}/{{step}}.h5",
    log:
        f"{R}/logs/sample/{{study}}/{{experiment}}/{{step}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{study}}/{{experiment}}/{{step}}.tsv"
    conda:
        "../envs/environment.yaml"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        spec=lambda w: as_json(cfg.experiment_spec(config, w.study, w.experiment)),
    shell:
        "python -m core.sample --checkpoint {input.ckpt}/{wildcards.step}.pt --spec {params.spec:q}"
        " --out {output} --threads {threads} >> {log} 2>&1"
