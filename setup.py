"""anifacegan_jax: trainable AniFaceGAN (animatable 3D-aware face GAN) in JAX/Flax."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent

INSTALL_REQUIRES = [
    "jax>=0.4.35",
    "flax>=0.10.0",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.6.0",
    "numpy>=1.26",
    "scipy>=1.11",  # MATLAB .mat files (Deep3DFaceRecon coefficients, BFM)
    "tensorflow-cpu>=2.16; platform_machine == 'x86_64'",  # tf.data for tfds and clu
    "tensorflow>=2.16; platform_machine != 'x86_64'",
    "tensorflow-datasets>=4.9.4",
    "importlib_resources>=6.0",  # needed by tfds when preparing datasets
    "tensorboard>=2.16",
    "ml-collections>=0.1.1",
    "clu>=0.0.12",
    "pillow>=10.0",
]

setuptools.setup(
    name="anifacegan_jax",
    version="0.1.0",
    description=__doc__,
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["anifacegan_jax", "anifacegan_jax.*"]),
    # The shipped models (`anifacegan_jax.pretrained`): config, EMA generator, prior, recon net.
    package_data={"anifacegan_jax.pretrained": ["*/*.json", "*/*.msgpack", "*/*.npz"],
                  "anifacegan_jax.viewer": ["*.html"]},  # the viewer's page
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # selenium drives Chromium in the viewer's browser test (launch/install_chromium.sh).
        "test": ["pytest>=8.0", "pytest-xdist>=3.8", "imageio-ffmpeg>=0.5", "selenium>=4.11"],
        "video": ["imageio-ffmpeg>=0.5"],  # .mp4 output of `sample --mode=video` (GIF/WebP need none)
        # NVIDIA GPUs from Volta (V100) on: CUDA 12 wheels (CUDA 13 dropped Volta).
        "cuda12": ["jax[cuda12]>=0.4.35"],
        "cuda13": ["jax[cuda13]>=0.7.0"],  # Turing and newer only
        "tpu": ["jax[tpu]>=0.4.35"],
    },
    license="Apache-2.0",
)
