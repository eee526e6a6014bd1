"""Diffusion study workflow: data → train → sample → evaluate → report.

snakemake --profile profiles/local            # the default studies (the CPU demo)
snakemake --profile profiles/local results/demo-a/report/table.md
"""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "rules/captions/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/latent.smk"
include: "rules/train.smk"
include: "rules/sample.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


localrules:
    all,
    report,
    collect_checkpoints,
    forecast,


# Without a target: the reports of `studies_to_run`, else of `default_studies` (local or cluster: rules/common.smk).
rule all:
    default_target: True
    input:
        default_target,
