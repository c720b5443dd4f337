"""Character-level LM: the packaged corpus, the 90/5/5 split, windows and vocabulary."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch

from gatesearch.tasks import CharLM, Split, TaskError

SHAKESPEARE_CHARS = 1_115_394
SHAKESPEARE_VOCAB = 65


def test_packaged_corpus_is_tiny_shakespeare() -> None:
    ref = resources.files("gatesearch") / "data" / "tinyshakespeare.txt"
    text = ref.read_text(encoding="utf-8")
    assert len(text) == SHAKESPEARE_CHARS and text.startswith("First Citizen:")
    task = CharLM()
    assert task.n_in == task.n_out == SHAKESPEARE_VOCAB
    assert task.causal and task.metric_name == "loss" and not task.higher_is_better


def test_windows_predict_the_next_character() -> None:
    task = CharLM(seq_len=32)
    text = (resources.files("gatesearch") / "data" / "tinyshakespeare.txt").read_text()
    batch = next(task.batches(Split.TRAIN, 4, seed=0))
    assert batch.inputs.shape == batch.targets.shape == (4, 32) and batch.mask.all()
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    assert task.decode(batch.inputs[0]) + task.decode(batch.targets[0][-1:]) in text
    # Validation windows tile the validation part: 5 % of the text, in order.
    valid = list(task.batches(Split.VALID, 1000))
    ids = torch.cat([b.inputs.reshape(-1) for b in valid])
    n_train = int(SHAKESPEARE_CHARS * 0.9)
    assert task.decode(ids) == text[n_train : n_train + len(ids)]
    assert int(SHAKESPEARE_CHARS * 0.05) - len(ids) < 32


def test_vocabulary_comes_from_the_training_part(tmp_path: Path) -> None:
    # 'z' only occurs after the first 90 %, so it reads as the unknown id.
    path = tmp_path / "corpus.txt"
    path.write_text("ab" * 450 + "z" * 100, encoding="utf-8")
    task = CharLM(path=str(path), seq_len=8)
    assert task.vocab == "ab" and task.n_in == 3
    test_ids = torch.cat([b.inputs.reshape(-1) for b in task.batches(Split.TEST, 64)])
    assert (test_ids == 2).all() and task.decode([2]) == "\ufffd"


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: CharLM(path=str(d / "missing.txt")), r"missing\.txt: no such file.*path"),
        (lambda d: CharLM(path=str(d)), r"is a directory.*path"),
        (
            lambda d: CharLM(path=str(_write(d / "short.txt", "abc" * 30))),
            r"short\.txt: the valid part has 4 characters.*seq_len",
        ),
        (
            lambda d: CharLM(path=str(_write_bytes(d / "latin.txt", b"caf\xe9" * 100))),
            r"latin\.txt: not UTF-8.*path",
        ),
        (lambda d: CharLM(seq_len=0), r"task charlm: param seq_len"),
    ],
    ids=["missing", "directory", "too-short", "not-utf8", "bad-seq-len"],
)
def test_bad_input_raises_one_clear_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(TaskError, match=message) as info:
        make(tmp_path)
    assert "\n" not in str(info.value)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
