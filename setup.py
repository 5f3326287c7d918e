"""lmx: JAX/Flax language-model pretraining on any mesh."""

from setuptools import find_packages, setup

setup(
    name="lmx",
    version="0.1.0",
    description="JAX/Flax research codebase for pretraining and studying Transformer language models",
    packages=find_packages(include=["lmx", "lmx.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        "jax>=0.10.2,<0.11",
        "jaxlib>=0.10.2,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "seqio==0.0.20",
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10,<4.10",
        "ml-collections>=1.1,<1.2",
        "sentencepiece>=0.2,<0.3",
        "safetensors>=0.4",  # Hugging Face checkpoints (lmx.convert.hf)
        "absl-py>=2.1",
        "numpy>=1.26",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        # lmx.serve: an ASGI app on uvicorn (lmx/inference/server.py says why Starlette rather than FastAPI);
        # httpx for lmx.inference.loadtest.
        "starlette>=1.0,<2",
        "uvicorn>=0.30",
        "httpx>=0.27",
        "sacrebleu>=2.4,<3",  # BLEU of the translation fine-tuning tasks (lmx.finetune.metrics)
        "matplotlib>=3.8",  # experiments/: the studies' plots
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "ruff>=0.6",
            # Golden tests compare against Hugging Face PyTorch models (T5, GPT-2, BERT, ALBERT, Switch, XLNet) and
            # tokenizers on the same random weights / the same text (CPU build).
            "torch==2.13.0",
            "transformers==5.24.0",  # its Switch MoE zeroes over-capacity tokens (5.0-5.17 dropped none)
            # Independent references of the fine-tuning metrics.
            "scikit-learn>=1.4",
            "scipy>=1.11",
        ],
    },
)
