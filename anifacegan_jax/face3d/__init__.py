"""3D morphable face models: the BFM (Deep3DFaceRecon format), the embedded procedural model,
a rasteriser for the SynthFaces dataset, and the coefficient regressor."""
