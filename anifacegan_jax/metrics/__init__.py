"""Evaluation metrics of a trained generator."""
