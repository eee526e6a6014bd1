"""Core of the diffusion study: data, models, diffusion, samplers and the workflow's stages.

Each stage is a module runnable as ``python -m core.<stage>``; the rest are libraries they share.
"""
