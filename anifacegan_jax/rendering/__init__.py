"""Cameras, rays, ray/manifold intersection and compositing (pure jnp)."""
