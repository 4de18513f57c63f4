"""The finetuning data path, `train_loader: {name: finetuning, dataset: {...}}`, with llm-foundry's formats and keys.

    formats.py        example formats (prompt/response, chat messages), validation, preprocessing_fn resolution
    preprocessors.py  llm-foundry's built-in preprocessing functions (registered by dataset name)
    tokenize.py       an example -> turns of (prompt ids, response ids); chat rendered with the chat template
    masking.py        turns -> input_ids and aligned labels under target_prompts / target_responses
    collate.py        padding, sequence_id, allow_pad_trimming
    packing.py        packing several examples per row; packing_ratio 'auto'
    sources.py        loading raw examples (datasets: local files or folders) and tokenising them once
    prep_tokenizer.py the converter's tokenizer: ids from `tokenizers` alone; transformers only for chat templates
    mds.py            reading llm-foundry's finetuning MDS layout with mosaicml-streaming
    preflight.py      checks before anything is built: local data files, packing without sequence_id
    loader.py         build_finetuning_dataloader
    inspect.py        `llmfoundry data-prep inspect`: the masks of the first examples
"""
