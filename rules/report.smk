rule report:
    input:
        metrics=lambda w: study_files(w.study, paths.metrics),
        samples=lambda w: study_files(w.study, paths.samples),
        train_logs=lambda w: study_train_logs(w.study),
        autoencoders=lambda w: study_autoencoder_reports(w.study),
        indexes=lambda w: study_checkpoint_indexes(w.study),
        selected=lambda w: study_selected(w.study, paths.selected_metrics),
        selected_samples=lambda w: study_selected(w.study, paths.selected_samples),
    output:
        [
            report(
                f"{paths.report_dir(R, '{study}')}/{name}",
                caption=f"captions/{name}.rst",
                category="{study}",
            )
            for name in paths.REPORT_FILES
        ],
    log:
        paths.log(R, "report", "{study}"),
    benchmark:
        paths.benchmark(R, "report", "{study}")
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code_param("report"),
        study=lambda w: spec_json(report_study(w.study)),
        out_dir=lambda w: paths.report_dir(R, w.study),
        autoencoders=lambda w, input: [
            f for f in input.autoencoders if f.endswith(".json")
        ],
    shell:
        "python -m core.stages.report --study {params.study:q} --metrics {input.metrics:q}"
        " --samples {input.samples:q} --train-logs {input.train_logs:q} --autoencoders {params.autoencoders:q}"
        " --indexes {input.indexes:q} --selected {input.selected:q} --selected-samples {input.selected_samples:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule collect_checkpoints:
    input:
        metrics=lambda w: curve_files(w, paths.metrics),
        samples=lambda w: curve_files(w, paths.samples),
    output:
        paths.checkpoint_index(R, "{study}", "{experiment}", "{replicate}"),
    log:
        paths.log(R, "collect_checkpoints", "{study}", "{experiment}", "{replicate}"),
    benchmark:
        paths.benchmark(
            R, "collect_checkpoints", "{study}", "{experiment}", "{replicate}"
        )
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_param("collect_checkpoints"),
    shell:
        "python -m core.stages.collect_checkpoints --metrics {input.metrics:q} --samples {input.samples:q}"
        " --out {output:q} > {log:q} 2>&1"


# A rehearsal's forecast: the real budgets × what each rehearsal job measured (core/forecast.py, --rehearsal).
rule forecast:
    input:
        reports=lambda w: [
            f
            for s in PLAN.default_studies(on_cluster())
            for f in paths.report_files(R, s)
        ],
    output:
        md=f"{paths.forecast_dir(R)}/forecast.md",
        csv=f"{paths.forecast_dir(R)}/forecast.csv",
    log:
        paths.log(R, "forecast", "forecast"),
    conda:
        "../envs/environment.yaml"
    envmodules:
        *config["envmodules"],
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=code_param("forecast"),
        config=spec_json({**PLAN.raw_config, "rehearse": False}),
        # the forecast folder is <root>/forecast: both follow the output, as on a node without the shared path
        root=lambda w, output: os.path.dirname(os.path.dirname(output.md)),
        out_dir=lambda w, output: os.path.dirname(output.md),
    shell:
        "python -m core.forecast --config-json {params.config:q} --rehearsal {params.root:q}"
        " --out {params.out_dir:q} > {log:q} 2>&1"
