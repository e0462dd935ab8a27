"""Build the recommender from its parts: backbone -> adapter -> towers."""

from __future__ import annotations

from typing import Any

from crossrec_cli.models.backbone import build_backbone
from crossrec_cli.models.runtimes import check
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig


def build_recommender(model_cfg: dict[str, Any], backbone_cfg: dict[str, Any], adapter_cfg: dict[str, Any],
                      seed: int, total_steps: int | None = None, domain_adapters: list[str] | None = None) -> SeqRec:
    """``model_cfg`` = conf/model/seqrec.yaml values, ``backbone_cfg`` = conf/backbone/*,
    ``adapter_cfg`` = conf/adapter/* (``name`` + hyperparameters). ``domain_adapters``: one named
    adapter per listed domain on the shared backbone, switched whenever a domain is encoded."""
    from crossrec_cli.adapters import ADAPTERS, add_named_adapter, apply_adapter, set_active_adapter

    mc = {k: v for k, v in model_cfg.items() if k != "name"}
    cfg = SeqRecConfig(**mc, pooling=backbone_cfg.get("pooling", "mean"), max_length=int(backbone_cfg.get("max_length") or 64))
    backbone = None
    method = adapter_cfg.get("name", "frozen")
    if backbone_cfg.get("kind", "encoder") != "none":
        b = backbone_cfg
        runtime = b.get("runtime", "torch")
        check(runtime, b.get("kind", "encoder"), ADAPTERS.get(method).trains_backbone(method))  # a reloaded run's adapter
        backbone = build_backbone(b["name"], b.get("path"), b.get("local"), b.get("config"), b.get("kind", "encoder"),
                                  seed, bool(b.get("trust_remote_code", False)), runtime=runtime)
        hp = {k: v for k, v in adapter_cfg.items() if k != "name"}
        names = list(domain_adapters or [])
        first = {"adapter_name": names[0]} if names else {}
        backbone.model = apply_adapter(backbone.model, method, total_steps=total_steps, **first, **hp)
        for name in names[1:]:
            add_named_adapter(backbone.model, method, name, total_steps=total_steps, **hp)
    model = SeqRec(cfg, backbone, backbone_trains=ADAPTERS.get(method).trains_backbone(method))
    if backbone is not None and domain_adapters:
        bm = backbone.model
        model.switch_adapter = lambda key: set_active_adapter(bm, key)
    return model
