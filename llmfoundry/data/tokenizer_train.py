"""Train a byte-level BPE tokenizer on local files and save it as a transformers tokenizer folder.

The folder is written with `tokenizers` alone (tokenizer.json plus the two small JSON files
`save_pretrained` writes), so `llmfoundry tokenizer train` never imports transformers (and with it
torch): ~2 s of startup on a small machine. `AutoTokenizer.from_pretrained` loads the folder as usual.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmfoundry.data.documents import JSON_SUFFIXES, iter_documents, list_files
from llmfoundry.data.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

EOS_TOKEN = '<|endoftext|>'
PAD_TOKEN = '<|padding|>'


def train_byte_level_bpe(
    inputs: Iterable[str | os.PathLike],
    vocab_size: int,
    out_dir: str | os.PathLike,
    min_frequency: int = 2,
    model_max_length: int = 2048,
) -> PreTrainedTokenizerFast:
    """Train on `inputs` (files/folders; .jsonl uses the 'text' field) and save to `out_dir`.

    Like GPT-NeoX's tokenizer, `<|endoftext|>` is BOS, EOS and UNK, and `<|padding|>` pads. Byte-level
    means every string encodes (no unknown characters), so the vocabulary starts from the 256 bytes.
    Returns the saved folder loaded as a transformers tokenizer (`train_tokenizer_folder` skips that).
    """
    train_tokenizer_folder(inputs, vocab_size, out_dir, min_frequency, model_max_length)
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 - heavy (imports torch); only here

    return PreTrainedTokenizerFast.from_pretrained(str(out_dir))


def train_tokenizer_folder(
    inputs: Iterable[str | os.PathLike],
    vocab_size: int,
    out_dir: str | os.PathLike,
    min_frequency: int = 2,
    model_max_length: int = 2048,
) -> int:
    """`train_byte_level_bpe` without importing transformers; returns the vocabulary size."""
    special = [EOS_TOKEN, PAD_TOKEN]
    if vocab_size < 256 + len(special):
        raise DataError(f'--vocab-size must be at least {256 + len(special)} (256 bytes + special tokens)')
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    inputs = list(inputs)
    seen, skipped = 0, []

    def counted() -> Iterator[str]:
        nonlocal seen
        for doc in _documents(inputs, skipped):
            seen += 1
            yield doc

    bpe.train_from_iterator(counted(), trainer=trainer)
    if skipped:
        log.warning('skipped %d files that are not UTF-8 text (e.g. %s)', len(skipped), skipped[0])
    if seen == 0:
        raise DataError(f'no documents found in {list(map(str, inputs))}')
    _save_folder(bpe, Path(out_dir), model_max_length)
    return bpe.get_vocab_size(with_added_tokens=True)


def _save_folder(bpe: Tokenizer, out: Path, model_max_length: int) -> None:
    """What `PreTrainedTokenizerFast(tokenizer_object=bpe, ...).save_pretrained(out)` writes."""
    specials = {'bos_token': EOS_TOKEN, 'eos_token': EOS_TOKEN, 'pad_token': PAD_TOKEN, 'unk_token': EOS_TOKEN}
    added = {
        str(bpe.token_to_id(token)): {'content': token, 'lstrip': False, 'normalized': False, 'rstrip': False,
                                      'single_word': False, 'special': True}
        for token in (EOS_TOKEN, PAD_TOKEN)
    }
    config = {
        'added_tokens_decoder': added,
        **specials,
        'clean_up_tokenization_spaces': False,
        'extra_special_tokens': {},
        'model_input_names': ['input_ids', 'attention_mask'],  # no token_type_ids: causal LMs take none
        'model_max_length': model_max_length,
        'tokenizer_class': 'PreTrainedTokenizerFast',
    }
    out.mkdir(parents=True, exist_ok=True)
    bpe.save(str(out / 'tokenizer.json'))
    for name, content in (('tokenizer_config.json', config), ('special_tokens_map.json', specials)):
        (out / name).write_text(json.dumps(dict(sorted(content.items())), indent=2, ensure_ascii=False) + '\n')


def _documents(inputs: list[str | os.PathLike], skipped: list[Path]) -> Iterator[str]:
    """`iter_documents`, file by file, so that files in a folder that are not UTF-8 text (e.g.
    __pycache__/*.pyc) are collected in `skipped` instead of each logging a warning. A file named explicitly
    must be text, and a malformed JSON Lines file is an error wherever it is.
    """
    for item in inputs:
        in_folder = Path(item).is_dir()
        for path in list_files(item):
            try:
                yield from iter_documents([path])
            except DataError:
                if not in_folder or path.name.endswith(JSON_SUFFIXES):
                    raise
                skipped.append(path)
