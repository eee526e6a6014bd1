"""The networks' sizes as data, free of torch (planning reads it): the DiT zoo and the UNet's sizes by image size.

A configuration is checked here at planning time (``check_unet``, ``check_dit``), so that a width that a norm's group
count or an attention head count does not divide fails before any job, naming the key.
"""

from __future__ import annotations

from typing import Any

_ZOO_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}

# The paper's model zoo (Table 1: depth, hidden size, heads; × patch 2/4/8) and the reference study's
# configurations ("pixel-ref" is meant for 128² pixel input: 8×8 = 64 tokens).
DIT_CONFIGS: dict[str, dict[str, int]] = {
    **{
        f"DiT-{size}/{p}": {"depth": d, "hidden_size": w, "num_heads": h, "patch_size": p}
        for size, (d, w, h) in _ZOO_SIZES.items()
        for p in (2, 4, 8)
    },
    "ref-12": {"depth": 12, "hidden_size": 768, "num_heads": 12, "patch_size": 2},
    "ref-8": {"depth": 8, "hidden_size": 512, "num_heads": 8, "patch_size": 2},
    "pixel-ref": {"depth": 8, "hidden_size": 512, "num_heads": 8, "patch_size": 16},
}


# The UNet's channel multipliers by input size (improved-diffusion / ADM; extended below 32 by halving the levels),
# keyed by the largest power of two not above the size.
UNET_CHANNEL_MULT = {
    8: [1, 2],
    16: [1, 2, 2],
    32: [1, 2, 2, 2],
    64: [1, 2, 3, 4],
    128: [1, 1, 2, 3, 4],
    256: [1, 1, 2, 2, 4, 4],
}
UNET_ATTENTION_MAX_SIDE = 16  # attention at every level of side ≤ 16 below the input's own (DDPM: 16², ADM: 32-16-8)


def unet_channel_mult(size: int) -> list[int]:
    """The default ``channel_mult`` of a UNet whose input is ``size``² (``UNET_CHANNEL_MULT``)."""
    key = max((k for k in UNET_CHANNEL_MULT if k <= size), default=min(UNET_CHANNEL_MULT))
    return list(UNET_CHANNEL_MULT[key])


def unet_level_sides(size: int, channel_mult: list[int]) -> list[int]:
    """The feature-map side at each level (the input's, then halved per level)."""
    return [size // 2**i for i in range(len(channel_mult))]


def unet_attention_resolutions(size: int, channel_mult: list[int]) -> list[int]:
    """The default ``attention_resolutions``: every level of side ≤ 16, except the input's own resolution."""
    return [r for r in unet_level_sides(size, channel_mult) if r <= UNET_ATTENTION_MAX_SIDE and r < size]


def check_unet(net: dict[str, Any], size: int) -> list[tuple[str, str]]:
    """Problems of a complete UNet net spec at input ``size``: ``[(net key, what is wrong)]``."""
    problems = []
    mult, groups, heads = net["channel_mult"], net["norm_groups"], net["num_heads"]
    levels = len(mult)
    if size % 2 ** (levels - 1):
        problems.append(
            (
                "channel_mult",
                f"{levels} levels halve the input {levels - 1} times, but {size} is not "
                f"divisible by {2 ** (levels - 1)}",
            )
        )
    widths = sorted({net["base_channels"], *(net["base_channels"] * m for m in mult)})
    bad = [w for w in widths if w % groups]
    if bad:
        problems.append(
            ("norm_groups", f"{groups} groups do not divide the widths {bad} (base_channels × channel_mult)")
        )
    sides = unet_level_sides(size, mult)
    attn_widths = {
        net["base_channels"] * m for m, r in zip(mult, sides, strict=True) if r in net["attention_resolutions"]
    }
    attn_widths.add(net["base_channels"] * mult[-1])  # the middle block always attends
    bad = sorted(w for w in attn_widths if w % heads)
    if bad:
        problems.append(("num_heads", f"{heads} heads do not divide the attention widths {bad}"))
    unused = sorted(set(net["attention_resolutions"]) - set(sides))
    if unused:
        problems.append(("attention_resolutions", f"{unused} is not a level's side (the levels are {sides})"))
    return problems


def dit_sizes(net: dict[str, Any]) -> dict[str, Any]:
    """patch_size, hidden_size, depth, num_heads (and mlp_ratio) of a DiT net spec (a zoo ``config`` or sizes)."""
    if "config" in net:
        if net["config"] not in DIT_CONFIGS:
            raise KeyError(net["config"])
        return {**DIT_CONFIGS[net["config"]], "mlp_ratio": net.get("mlp_ratio", 4.0)}
    return {k: net[k] for k in ("patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio")}


def check_dit(net: dict[str, Any], size: int) -> list[tuple[str, str]]:
    """Problems of a complete DiT net spec at input ``size``: ``[(net key, what is wrong)]``."""
    try:
        s = dit_sizes(net)
    except KeyError:
        return [("config", f"unknown DiT configuration {net['config']!r}; known: {', '.join(sorted(DIT_CONFIGS))}")]
    problems = []
    if size % s["patch_size"]:
        problems.append(("patch_size", f"{s['patch_size']} does not divide the input size {size}"))
    if s["hidden_size"] % s["num_heads"]:
        problems.append(("num_heads", f"{s['num_heads']} heads do not divide hidden_size {s['hidden_size']}"))
    if s["hidden_size"] % 4:
        problems.append(("hidden_size", f"{s['hidden_size']} is not divisible by 4 (the 2-D position embedding)"))
    return problems


def complete_unet(net: dict[str, Any], size: int) -> list[tuple[str, str]]:
    """A UNet net spec's size-dependent defaults filled for input ``size`` (a null ``channel_mult`` and
    ``attention_resolutions``), then its problems (``check_unet``)."""
    if net["channel_mult"] is None:
        net["channel_mult"] = unet_channel_mult(size)
    if net["attention_resolutions"] is None:
        net["attention_resolutions"] = unet_attention_resolutions(size, net["channel_mult"])
    return check_unet(net, size)


# Per backbone (``core.models.BACKBONES``, the schema's ``backbone`` enum): complete its net spec for an input side
# and list its problems, at planning time.
PLAN_NET = {"unet": complete_unet, "dit": check_dit}
