"""Label conventions shared by the loaders and the loss; torch-free, so data prep can use them."""

IGNORE_INDEX = -100  # a label that takes no loss (padding, masked prompts): cross-entropy's ignore_index
