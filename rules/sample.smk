from core import launch


rule sample:
    input:
        unpack(sample_inputs),
    output:
        paths.samples(R, "{study}", "{experiment}", "{replicate}", "{step}"),
    log:
        paths.log(R, "sample", "{study}", "{experiment}", "{replicate}", "{step}"),
    benchmark:
        paths.benchmark(R, "sample", "{study}", "{experiment}", "{replicate}", "{step}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gres=lambda w: launch.gpu_gres(PLAN.sample_gpus(w.study, w.experiment)),
        cpus_per_task=lambda w, threads: launch.cpus_per_node(
            threads, PLAN.sample_gpus(w.study, w.experiment)
        ),
    params:
        code=code_param("sample"),
        spec=lambda w: spec_json(PLAN.sample_spec(w.study, w.experiment, rep(w))),
        gpus=lambda w: PLAN.sample_gpus(w.study, w.experiment),
        checkpoint=checkpoint_file,
        autoencoder=lambda w, input: input.get("autoencoder", ""),
    shell:
        "python -m core.launch --gpus {params.gpus:q} sample --checkpoint {params.checkpoint:q}"
        " --spec {params.spec:q} --autoencoder={params.autoencoder:q} --out {output:q}"
        " --threads {threads:q} >> {log:q} 2>&1"
