import re
from pathlib import Path

from setuptools import find_packages, setup


HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "hf_gradprobe" / "__init__.py").read_text()).group(1)

# torch is listed without an upper pin on purpose: install the CPU wheel first
# (`pip install torch==2.13.0`), otherwise pip pulls a multi-GB CUDA build.
INSTALL_REQUIRES = [
    "torch>=2.4",
    "transformers>=5.0",
    "accelerate>=1.0",
    "datasets>=3.0",
    "evaluate>=0.4",
    "huggingface_hub>=1.0",
    "safetensors>=0.4",
    "tqdm",
    "filelock>=3.30",
    "psutil",
    "pyyaml",
    "typing_extensions",
]
EXTRAS = {
    "test": [
        "pytest>=8",
        "hypothesis>=6.100",
        "gguf>=0.10",
        "matplotlib>=3.7",
        "peft>=0.13",
        "trl>=0.19",
        "tensorboard>=2.14",
    ],
    "card": ["matplotlib>=3.7"],
    "gguf": ["gguf>=0.10"],
}
EXTRAS["dev"] = sorted({dep for deps in EXTRAS.values() for dep in deps} | {"ruff==0.17.6"})

setup(
    name="hf_gradprobe",
    version=VERSION,
    description="Sparse language models with Hugging Face Transformers: one-shot gradient-probing pruning, "
    "pruning while training, perplexity evaluation and Hub sharing.",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["hf_gradprobe", "hf_gradprobe.*"]),
    package_data={
        "hf_gradprobe": ["sharing/templates/*.md", "evaluation/metrics/*/*.py", "evaluation/metrics/*/*.md"]
    },
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["hf-gradprobe=hf_gradprobe.cli:main"]},
)
