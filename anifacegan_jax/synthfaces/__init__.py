"""SynthFaces, the embedded world: a procedural morphable face model generated in
Deep3DFaceRecon's conventions (procedural*.py), a rasteriser (raster.py) and its lighting
(shading.py), the scene around a face (scene.py) and the renderer of dataset examples with their
ground truth (synthetic.py)."""
