"""Backbones, item/user towers, baselines."""
