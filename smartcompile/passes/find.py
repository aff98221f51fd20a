"""Find every attention site of a graph, in graph order, named and with its spec."""
from __future__ import annotations

import dataclasses

from torch.fx import GraphModule

from .._logging import logger
from .manual import match_softmax
from .mha import expand_multi_head_attention
from .naming import name_sites
from .normalize import canon
from .sdpa import match_sdpa
from .site import AttentionSite
from .spec_from_site import spec_from_site


def find_attention_sites(gm: GraphModule) -> list[AttentionSite]:
    sites = expand_multi_head_attention(gm)  # nn.MultiheadAttention -> SDPA; the rest reported
    for node in gm.graph.nodes:
        c = canon(node)
        if c is None:
            continue
        if c.op not in ("sdpa", "softmax"):
            continue
        try:
            site = match_sdpa(node) if c.op == "sdpa" else match_softmax(node)
        except Exception as exc:  # noqa: BLE001 - a matcher bug must never fail the user's compile
            logger.warning("smartattn: could not analyse %s (%s: %s); left untouched", node.name,
                           type(exc).__name__, exc)
            continue
        if site is not None:
            sites.append(site)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    sites.sort(key=lambda s: order[s.output])
    return [_with_spec(site) for site in name_sites(sites)]


def _with_spec(site: AttentionSite) -> AttentionSite:
    if site.rejected is not None:
        return site
    try:
        return dataclasses.replace(site, spec=spec_from_site(site))
    except ValueError as exc:  # e.g. head counts that do not divide
        return site.rejecting(f"cannot describe the site: {exc}")
