"""Find every attention site of a graph, in graph order, named and with its spec."""
from __future__ import annotations

from torch.fx import GraphModule

from .._logging import logger
from .manual import match_softmax
from .naming import name_sites
from .normalize import canon
from .sdpa import match_sdpa
from .site import AttentionSite
from .spec_from_site import spec_from_site


def find_attention_sites(gm: GraphModule) -> list[AttentionSite]:
    sites = []
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
    name_sites(sites)
    for site in sites:
        if site.rejected is None:
            try:
                site.spec = spec_from_site(site)
            except ValueError as exc:  # e.g. head counts that do not divide
                site.rejected = f"cannot describe the site: {exc}"
    return sites
