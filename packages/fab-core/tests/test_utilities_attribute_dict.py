"""AttributeDict: a dict whose keys are attributes too."""

from __future__ import annotations

import copy
import pickle

import pytest

from fab.core.utilities import AttributeDict


def test_items_read_and_write_as_attributes() -> None:
    hparams = AttributeDict(lr=0.1)
    hparams.batch_size = 32
    assert hparams.lr == 0.1
    assert hparams["batch_size"] == 32
    assert hparams == {"lr": 0.1, "batch_size": 32}


def test_deleting_an_attribute_deletes_the_item() -> None:
    hparams = AttributeDict(lr=0.1, momentum=0.9)
    del hparams.momentum
    assert hparams == {"lr": 0.1}


def test_a_missing_attribute_raises_attribute_error_naming_the_keys() -> None:
    hparams = AttributeDict(lr=0.1)
    with pytest.raises(AttributeError, match=r"no key 'momentum'.*\['lr'\]"):
        _ = hparams.momentum
    assert not hasattr(hparams, "momentum")
    assert getattr(hparams, "momentum", 0.0) == 0.0


def test_deleting_a_missing_attribute_raises_both_attribute_and_key_error() -> None:
    hparams = AttributeDict()
    with pytest.raises(AttributeError):
        del hparams.lr
    with pytest.raises(KeyError):  # as Lightning's does
        del hparams.lr


def test_it_is_a_dict() -> None:
    hparams = AttributeDict({"a": 1}, b=2)
    assert isinstance(hparams, dict)
    assert dict(hparams) == {"a": 1, "b": 2}
    assert hparams.keys() == {"a", "b"}  # dict methods win over keys of the same name


def test_repr_lists_one_aligned_row_per_key_sorted() -> None:
    hparams = AttributeDict(lr=0.1, batch_size=32, name="run")
    assert repr(hparams) == '"batch_size": 32\n"lr":         0.1\n"name":       \'run\''


def test_repr_of_an_empty_one_names_the_type() -> None:
    assert repr(AttributeDict()) == "AttributeDict()"


def test_it_pickles_and_copies_as_an_attribute_dict() -> None:
    hparams = AttributeDict(lr=0.1, nested=AttributeDict(depth=2))
    for clone in (pickle.loads(pickle.dumps(hparams)), copy.deepcopy(hparams), copy.copy(hparams)):
        assert type(clone) is AttributeDict
        assert clone == hparams
        assert clone.nested.depth == 2


def test_keys_show_in_dir() -> None:
    assert "lr" in dir(AttributeDict(lr=0.1))
