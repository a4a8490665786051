"""anifacegan_jax: a trainable JAX/Flax implementation of AniFaceGAN (Wu et al., NeurIPS 2022)."""

__version__ = "0.1.0"
