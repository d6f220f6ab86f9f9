"""Inference: per-clip detection, cross-clip linking and streaming video prediction."""
