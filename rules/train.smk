from core import launch


# A checkpoint rule: experiments that sample every checkpoint of an early-stopping model learn which steps
# exist once the model is trained (rules/common.smk: experiment_steps).
checkpoint train:
    input:
        data=lambda w: PLAN.train_data(w.study, w.model),
    output:
        ckpt=directory(paths.checkpoint_dir(R, "{study}", "{model}", "{replicate}")),
        log=paths.train_log(R, "{study}", "{model}", "{replicate}"),
    log:
        paths.log(R, "train", "{study}", "{model}", "{replicate}"),
    benchmark:
        paths.benchmark(R, "train", "{study}", "{model}", "{replicate}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    threads: THREADS
    # GPUs per node as `gres` (plugin: --gres=gpu:G, per node), no `gpu`/`tasks` (they would become the per-job
    # --gpus and the --ntasks-per-gpu trap), CPUs per node = threads (per process) × G, memory per CPU
    # (mem_mb_per_cpu in the profile), so both scale with G; docs/slurm.md shows the resulting sbatch lines.
    resources:
        mem_mb=8000,
        runtime=1440,
        gres=lambda w: launch.gpu_gres(PLAN.train_resources(w.study, w.model)["gpus"]),
        nodes=lambda w: PLAN.train_resources(w.study, w.model)["nodes"],
        cpus_per_task=lambda w, threads: launch.cpus_per_node(
            threads, PLAN.train_resources(w.study, w.model)["gpus"]
        ),
    params:
        code=code_param("train"),
        spec=lambda w: spec_json(PLAN.train_spec(w.study, w.model, rep(w))),
        gpus=lambda w: PLAN.train_resources(w.study, w.model)["gpus"],
        nodes=lambda w: PLAN.train_resources(w.study, w.model)["nodes"],
        timeout=lambda w: PLAN.train_resources(w.study, w.model)["collective_timeout_s"],
        out_dir=lambda w: paths.model_dir(R, w.study, w.model, w.replicate),
        compile_cache=paths.compile_cache(R),
    shell:
        "python -m core.launch --gpus {params.gpus:q} --nodes {params.nodes:q} train --spec {params.spec:q}"
        " --data {input.data:q} --out-dir {params.out_dir:q} --threads {threads:q}"
        " --compile-cache {params.compile_cache:q} --collective-timeout {params.timeout:q} >> {log:q} 2>&1"
