"""The training loop and what it runs each step: metrics, evaluation, callbacks and loggers."""
