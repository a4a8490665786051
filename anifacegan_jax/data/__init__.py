"""Datasets (tfds builders) and the device input pipeline."""
