"""Train a dense model until its validation accuracy plateaus, and record how it got there.

    python benchmarks/dense_reference.py --recipe RECIPE.yaml --out DIR [--weights FILE.pt]

The recipe's model, data, `dense.optim` and augmentation (at `augment.schedule.dense`) are used; the
stopping rule is `edgecomp.compression.convergence.PlateauRule` (validation only). DIR gets `state.pt` after every
epoch (a killed run resumes there), then `reference.json`: the validation curve, training loss, the
clean accuracy on the training images, validation and full-test accuracy, the train-val gap, seconds,
the command, and the weights' sha256. `--weights` also writes the final model as an edgecomp model file
(`torch.load(weights_only=True)`), which recipes use as `dense.weights`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from edgecomp.compression.augment import Augmenter
from edgecomp.compression.convergence import PlateauRule
from edgecomp.core.data import TensorBatches, load_data
from edgecomp.core.models import build_model, model_payload
from edgecomp.compression.objective import Objective
from edgecomp.core.recipe import Recipe, load_recipe
from edgecomp.core.rundir import save_tensors, sha256, write_text
from edgecomp.compression.train import InputSpec, TrainJob, evaluate, train_until_plateau

TRAIN_EVAL_CAP = 10_000  # clean training accuracy on at most this many training images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe override key.path=value")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--max-epochs", type=int, default=PlateauRule().max_epochs)
    parser.add_argument("--patience", type=int, default=PlateauRule().patience)
    args = parser.parse_args()
    record = train_reference(load_recipe(args.recipe, args.sets), args.out, args.weights,
                             PlateauRule(patience=args.patience, max_epochs=args.max_epochs))
    print(json.dumps({k: record[k] for k in ("epochs", "converged", "train_accuracy_clean", "val_accuracy",
                                              "test_accuracy", "train_val_gap")}))


def train_reference(recipe: Recipe, out: Path, weights: Optional[Path], rule: PlateauRule) -> dict:
    """Train the recipe's dense model to a validation plateau; `out/reference.json` says how it went."""
    if (out / "reference.json").is_file():
        return json.loads((out / "reference.json").read_text())
    data = load_data(recipe.data, recipe.model)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model)
    spec = InputSpec.create(recipe.model, data.mean, data.std, torch.device("cpu"))
    objective = Objective(recipe.teacher, 1.0, None, label_smoothing=recipe.dense.optim.label_smoothing)
    magnitude = recipe.augment.schedule.dense
    job = TrainJob(data=data.train, spec=spec, augment=Augmenter(recipe.augment), magnitude=magnitude,
                   optim=recipe.dense.optim, epochs=0, seed=recipe.seed, label="dense", objective=objective)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = train_until_plateau(model, job, data.val, rule, out / "state.pt")
    seen = data.train
    capped = TensorBatches(seen.images[:TRAIN_EVAL_CAP], seen.labels[:TRAIN_EVAL_CAP], seen.batch_size)
    train_acc, val_acc = evaluate(model, capped, spec), evaluate(model, data.val, spec)
    record = {
        "recipe": recipe.to_plain(), "magnitude": magnitude, **result.as_dict(), "rule_text": rule.describe(),
        "train_images": len(data.train), "val_images": len(data.val), "test_images": len(data.test),
        "train_accuracy_clean": train_acc, "val_accuracy": val_acc, "test_accuracy": evaluate(model, data.test, spec),
        "train_val_gap": train_acc - val_acc, "seconds_last_session": round(time.perf_counter() - start, 1),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "torch": torch.__version__,
    }
    if weights:
        save_tensors(weights, model_payload(model, recipe.model))
        record["weights"], record["weights_sha256"] = str(weights), sha256(weights)
    write_text(out / "reference.json", json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
