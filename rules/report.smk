rule report:
    input:
        metrics=lambda w: study_metrics(w.study),
        samples=lambda w: study_samples(w.study),
        train_logs=lambda w: study_train_logs(w.study),
        autoencoders=lambda w: study_autoencoder_reports(w.study),
        indexes=lambda w: study_checkpoint_indexes(w.study),
    output:
        table=report(
            f"{R}/{{study}}/report/table.md",
            caption="captions/table.rst",
            category="{study}",
        ),
        csv=report(
            f"{R}/{{study}}/report/table.csv",
            caption="captions/table_csv.rst",
            category="{study}",
        ),
        fid_is=report(
            f"{R}/{{study}}/report/fid_is.png",
            caption="captions/fid_is.rst",
            category="{study}",
        ),
        loss=report(
            f"{R}/{{study}}/report/loss.png",
            caption="captions/loss.rst",
            category="{study}",
        ),
        grids=report(
            f"{R}/{{study}}/report/grids.png",
            caption="captions/grids.rst",
            category="{study}",
        ),
        trajectory=report(
            f"{R}/{{study}}/report/trajectory.png",
            caption="captions/trajectory.rst",
            category="{study}",
        ),
        curves=report(
            f"{R}/{{study}}/report/curves.png",
            caption="captions/curves.rst",
            category="{study}",
        ),
        sweeps=report(
            f"{R}/{{study}}/report/sweeps.png",
            caption="captions/sweeps.rst",
            category="{study}",
        ),
    log:
        f"{R}/logs/report/{{study}}.log",
    benchmark:
        f"{R}/benchmarks/report/{{study}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        study=lambda w: as_json(
            {
                "name": w.study,
                "title": config["studies"][w.study].get("title", w.study),
                "layout": config["studies"][w.study]["layout"],
                "published_protocol": config["studies"][w.study].get(
                    "published_protocol", ""
                ),
                "resources": {
                    m: cfg.train_resources(config, w.study, m)
                    for m in study_models(w.study)
                },
                "models": {
                    m: cfg.model_spec(config, w.study, m)
                    for m in study_models(w.study)
                },
                "experiments": {
                    e: cfg.experiment_spec(config, w.study, e)
                    for e in study_experiments(w.study)
                },
            }
        ),
        out_dir=lambda w: cfg.report_dir(config, w.study),
        autoencoders=lambda w, input: [
            f for f in input.autoencoders if f.endswith(".json")
        ],
    shell:
        "python -m core.stages.report --study {params.study:q} --metrics {input.metrics} --samples {input.samples}"
        " --train-logs {input.train_logs} --autoencoders {params.autoencoders} --indexes {input.indexes}"
        " --out-dir {params.out_dir}"
        " > {log} 2>&1"


rule collect_checkpoints:
    input:
        metrics=lambda w: curve_files(w, cfg.metrics_path),
        samples=lambda w: curve_files(w, cfg.sample_path),
    output:
        f"{R}/{{study}}/metrics/{{experiment}}/checkpoints.json",
    log:
        f"{R}/logs/collect_checkpoints/{{study}}/{{experiment}}.log",
    benchmark:
        f"{R}/benchmarks/collect_checkpoints/{{study}}/{{experiment}}.tsv"
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m core.stages.collect_checkpoints --metrics {input.metrics} --samples {input.samples} --out {output} > {log} 2>&1"
