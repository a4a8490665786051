"""3D morphable face models in Deep3DFaceRecon's conventions: the BFM and the embedded procedural
model share `MorphableModel` (morphable.py); shapes, landmarks and the model → world transform
in JAX (geometry.py)."""
