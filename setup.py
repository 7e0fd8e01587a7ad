"""autox3d_jax: searching efficient 3D video networks in JAX/Flax."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.6",
    "flax>=0.10",
    "optax",
    "orbax-checkpoint",
    "clu",
    "ml_collections",
    "absl-py",
    "numpy",
    # Fast CPU kernels for the depthwise 3D conv (see cpu/depthwise.py).
    "numba",
    # Video input: tf.data decoding, tfds builders (CPU build is enough: TF only feeds data).
    "tensorflow-cpu; platform_machine=='x86_64'",
    "tensorflow; platform_machine!='x86_64'",
    "tensorflow-datasets",
    # clu.metric_writers imports tensorboard.
    "tensorboard",
    # The embedded moving-digits dataset renders real handwritten digits from sklearn's bundled set.
    "scikit-learn",
    "matplotlib",
    "pillow",
    "tqdm",
    # Video decoding for the folder/CSV converter (and the tests that encode small videos).
    "av",
    "scipy",
]

EXTRAS = {
    # nbclient + ipykernel: tests/test_notebooks.py executes the Colab notebooks.
    "test": ["pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel"],
    "tpu": ["jax[tpu]"],
    # Video-folder conversion (PyAV) and reference PyTorch models for checkpoint import / benchmarks.
    # Reference PyTorch models: checkpoint import tooling and the side-by-side benchmarks.
    "convert": ["torch==2.13.0"],
}

setup(
    name="autox3d_jax",
    version="0.1.0",
    description="AutoX3D-style architecture search for efficient video networks in JAX/Flax",
    packages=find_packages(include=["autox3d_jax", "autox3d_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
