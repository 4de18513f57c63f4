"""Data: tokenizers, MDS conversion (`prep`), and the streaming pretraining loader (`text_loader`).

Submodules are imported on use; `import llmfoundry.data` stays cheap.
"""
