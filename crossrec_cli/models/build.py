"""Build the recommender from its parts: backbone -> adapter -> towers."""

from __future__ import annotations

from typing import Any

from crossrec_cli.models.backbone import build_backbone
from crossrec_cli.models.seqrec import SeqRec, SeqRecConfig


def build_recommender(model_cfg: dict[str, Any], backbone_cfg: dict[str, Any], adapter_cfg: dict[str, Any],
                      seed: int, total_steps: int | None = None) -> SeqRec:
    """``model_cfg`` = conf/model/seqrec.yaml values, ``backbone_cfg`` = conf/backbone/*,
    ``adapter_cfg`` = conf/adapter/* (``name`` + hyperparameters)."""
    from crossrec_cli.adapters import apply_adapter

    mc = {k: v for k, v in model_cfg.items() if k != "name"}
    cfg = SeqRecConfig(**mc, pooling=backbone_cfg.get("pooling", "mean"), max_length=int(backbone_cfg.get("max_length") or 64))
    backbone = None
    method = adapter_cfg.get("name", "frozen")
    if backbone_cfg.get("kind", "encoder") != "none":
        b = backbone_cfg
        backbone = build_backbone(b["name"], b.get("path"), b.get("local"), b.get("config"), b.get("kind", "encoder"),
                                  seed, bool(b.get("trust_remote_code", False)))
        hp = {k: v for k, v in adapter_cfg.items() if k != "name"}
        backbone.model = apply_adapter(backbone.model, method, total_steps=total_steps, **hp)
    return SeqRec(cfg, backbone, backbone_trains=method != "frozen")
