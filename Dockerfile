# llmfoundry on CUDA. Build: docker build -t llmfoundry .
# Run:   docker run --gpus all --ipc=host -it llmfoundry llmfoundry train yamls/pretrain/mpt-125m.yaml ... --nproc 8
# The -devel image carries nvcc, which flash-attn (the `gpu` extra) needs when no prebuilt wheel matches.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-devel
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAX_JOBS=8

WORKDIR /workspace/llmfoundry

# Dependencies first, so editing the code does not invalidate this layer. The base image's torch is kept
# (it matches the image's CUDA); every other package is pinned by the constraints file.
COPY setup.py pyproject.toml README.md ./
COPY requirements/ requirements/
RUN grep -v -E '^(torch|torchvision|torchaudio)==' requirements/constraints.txt > /tmp/constraints.txt \
    && pip install packaging ninja wheel \
    && mkdir llmfoundry && touch llmfoundry/__init__.py \
    && pip install -c /tmp/constraints.txt --no-build-isolation -e '.[gpu,wandb]'

COPY . .
RUN pip install -c /tmp/constraints.txt --no-build-isolation --no-deps -e . \
    && python -c "import flash_attn, llmfoundry; print('llmfoundry ready, flash-attn', flash_attn.__version__)"

# Runs, checkpoints and the quickstart's output belong to an unprivileged user.
RUN useradd --create-home --uid 1000 foundry && chown -R foundry /workspace
USER foundry
CMD ["bash"]
