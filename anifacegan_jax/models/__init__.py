"""Flax linen modules: template field, deformation field, generator."""
