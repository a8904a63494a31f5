"""Why is HMIL's attention localisation what it is? Per-epoch attention diagnostics.

Trains HMIL on one SYNTHETIC benchmark cohort (the same generator settings, seed and split as
``benchmarks.accuracy``) with the components of ``hmil.train.loop`` (same model, loss, Adam,
ReduceLROnPlateau on the validation fine AUC, bag order, gradient accumulation; no
checkpointing) and records after every epoch:

* the validation fine macro AUC (what model selection maximises),
* test fine balanced accuracy,
* attention localisation AUROC vs the key-instance mask of the true class's fine row, of the
  *other* fine rows (mean and max), of the true coarse row, and the attention mass on key
  instances of the true fine row.

HMIL's class-wise attention feeds one shared scalar head per level: logit_j = w · (A_j h). A bag
of class j can be classified either by row j attending to instances with a high w·h (positive
evidence: the key instances) or by the other rows attending to instances with a low w·h
(negative evidence) while row j attends anywhere. The loss does not prefer one; the "other
rows" columns show which one a run learned.

Usage::

    python -m benchmarks.attention_diagnostic --cohort easy --seed 1
    python -m benchmarks.attention_diagnostic --quick
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from benchmarks.accuracy import COHORTS, Prepared, prepare_synthetic
from benchmarks.common import RESULTS, machine, machine_line, write_json
from hmil.config import Config
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.model.losses import HMILLoss, SupConMemory
from hmil.train.metrics import level_metrics


def _auroc(mask: np.ndarray, scores: np.ndarray) -> float:
    if mask.all() or not mask.any():
        return float("nan")
    return float(roc_auc_score(mask, scores))


@torch.no_grad()
def evaluate(model: HMIL, prepared: Prepared, part: str) -> dict[str, float]:
    """Classification and attention diagnostics of one split part."""
    h = prepared.hierarchy
    items = prepared.items[part]
    model.eval()
    probs, true_row, other_mean, other_max, coarse_row, mass = [], [], [], [], [], []
    for item in items:
        out = model(item.features)
        probs.append(torch.softmax(out.fine_logits, -1).double().numpy())
        mask = item.key_mask
        assert mask is not None
        att = out.fine_attention.numpy()
        rows = [_auroc(mask, att[k]) for k in range(h.n_fine)]
        true_row.append(rows[item.fine])
        others = [r for k, r in enumerate(rows) if k != item.fine]
        other_mean.append(float(np.nanmean(others)))
        other_max.append(float(np.nanmax(others)))
        coarse_row.append(_auroc(mask, out.coarse_attention[h.parent[item.fine]].numpy()))
        mass.append(float(att[item.fine][mask].sum()))
    y = np.array([it.fine for it in items])
    metrics = level_metrics(y, np.stack(probs), h.fine)
    return {
        "fine_balanced_accuracy": metrics["balanced_accuracy"],
        "fine_macro_auc": metrics["macro_auc"],
        "auroc_true_fine_row": float(np.nanmean(true_row)),
        "auroc_other_fine_rows_mean": float(np.nanmean(other_mean)),
        "auroc_other_fine_rows_max": float(np.nanmean(other_max)),
        "auroc_true_coarse_row": float(np.nanmean(coarse_row)),
        "key_mass_true_fine_row": float(np.mean(mass)),
        "bags_true_row_below_half": int(np.sum(np.array(true_row) < 0.5)),
        "n_bags": len(items),
    }


def run(
    prepared: Prepared, epochs: int, lr: float, bags_per_step: int, seed: int
) -> list[dict[str, Any]]:
    """Train HMIL as ``hmil.train.loop`` does and evaluate after every epoch."""
    h = prepared.hierarchy
    config = Config()
    torch.manual_seed(seed)
    model = HMIL(prepared.in_dim, h.n_coarse, h.n_fine, config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    tc = config.train
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=tc.plateau_factor, patience=tc.plateau_patience
    )
    criterion = HMILLoss(config.loss, torch.from_numpy(h.mapping))
    memory = SupConMemory(config.loss.supcon_memory)
    train = prepared.items["train"]
    records = []
    for epoch in range(epochs):
        t0 = time.monotonic()
        model.train()
        memory.clear()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(train), generator=gen).tolist()
        optimizer.zero_grad(set_to_none=True)
        terms: dict[str, float] = {}
        for position, index in enumerate(order):
            group_start = position - position % bags_per_step
            group_size = min(bags_per_step, len(order) - group_start)
            item = train[index]
            out = model(item.features)
            result = criterion(out, item.fine, epoch, epochs, memory)
            (result.total / group_size).backward()
            memory.push(out.fine_embeddings, item.fine)
            for name, value in result.terms.items():
                terms[name] = terms.get(name, 0.0) + float(value) / len(train)
            if position == group_start + group_size - 1:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        val = evaluate(model, prepared, "val")
        test = evaluate(model, prepared, "test")
        score = val["fine_macro_auc"]
        if not math.isfinite(score):
            score = val["fine_balanced_accuracy"]
        scheduler.step(score)
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_terms": terms,
                  "val_fine_auc": val["fine_macro_auc"], "test": test,
                  "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
        records.append(record)
        print(
            f"epoch {epoch:2d} val AUC {val['fine_macro_auc']:.3f} | test bacc "
            f"{test['fine_balanced_accuracy']:.3f} attn true {test['auroc_true_fine_row']:.3f} "
            f"others {test['auroc_other_fine_rows_mean']:.3f} coarse "
            f"{test['auroc_true_coarse_row']:.3f} mass {test['key_mass_true_fine_row']:.2f}",
            flush=True,
        )
    return records


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# HMIL attention diagnostic (SYNTHETIC cohort)",
        "",
        machine_line(result["machine"]),
        "",
        f"Cohort `{result['cohort']}` seed {result['seed']} (`{result['spec']}`), the split of "
        "`benchmarks.accuracy`; HMIL defaults, Adam lr "
        f"{result['lr']}, {result['bags_per_step']} bags per step. Epoch marked * = the one "
        "model selection (best validation fine macro AUC) would keep. AUROC columns: attention "
        "of a row vs the key-instance mask, mean over test bags.",
        "",
        "| epoch | val fine AUC | test fine bacc | true fine row | other fine rows (mean) | "
        "other fine rows (max) | true coarse row | key mass (true row) | bags true row < 0.5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    best = max(
        range(len(result["epochs"])),
        key=lambda i: (_finite(result["epochs"][i]["val_fine_auc"]), -i),
    )
    for i, r in enumerate(result["epochs"]):
        t = r["test"]
        mark = "*" if i == best else ""
        lines.append(
            f"| {r['epoch']}{mark} | {r['val_fine_auc']:.3f} | {t['fine_balanced_accuracy']:.3f} | "
            f"{t['auroc_true_fine_row']:.3f} | {t['auroc_other_fine_rows_mean']:.3f} | "
            f"{t['auroc_other_fine_rows_max']:.3f} | {t['auroc_true_coarse_row']:.3f} | "
            f"{t['key_mass_true_fine_row']:.2f} | {t['bags_true_row_below_half']}/{t['n_bags']} |"
        )
    return "\n".join(lines) + "\n"


def _finite(x: float) -> float:
    return x if isinstance(x, float) and math.isfinite(x) else -math.inf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohort", default="easy", choices=sorted(COHORTS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--bags-per-step", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny cohort, 2 epochs")
    p.add_argument("--work", default="/tmp/hmil-bench-attention")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = COHORTS[args.cohort]
    if args.quick:
        import dataclasses

        spec = dataclasses.replace(spec, n_slides=28, grid_min=6, grid_max=8)
        args.epochs = 2
    hierarchy = Hierarchy.preset("bracs")
    prepared = prepare_synthetic(
        args.cohort, spec, args.seed, Path(args.work), hierarchy, (0.15, 0.3)
    )
    records = run(prepared, args.epochs, args.lr, args.bags_per_step, args.seed)
    result = {"machine": machine(), "synthetic": True, "cohort": args.cohort, "seed": args.seed,
              "spec": repr(spec), "lr": args.lr, "bags_per_step": args.bags_per_step,
              "epochs": records}  # fmt: skip
    tag = f"attention_{args.cohort}_seed{args.seed}" + ("_quick" if args.quick else "")
    out = Path(args.out)
    write_json(out / f"{tag}.json", result)
    (out / f"{tag}.md").write_text(markdown(result), encoding="utf-8")
    print(f"wrote {out / (tag + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
