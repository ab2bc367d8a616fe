"""When a training run has finished learning: a validation plateau, decided by torch's ReduceLROnPlateau.

The rule, stated once (the study, the dense reference and the results page all use it):

- after every epoch, validation accuracy goes to `ReduceLROnPlateau(mode="max", threshold_mode="abs")`;
- an epoch counts as an improvement only if it beats the best so far by at least `min_delta`;
- after `patience` + 1 epochs without improvement the learning rate is multiplied by `factor`;
- when that would happen for the (`drops` + 1)-th time, the run has plateaued and stops;
- `max_epochs` caps a run that never plateaus; it is then recorded as *not* converged.

Validation decides; the test set is never consulted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch


@dataclass(frozen=True)
class PlateauRule:
    patience: int = 2
    factor: float = 0.1
    min_delta: float = 0.001
    drops: int = 2
    max_epochs: int = 60

    def describe(self) -> str:
        return (f"stop when validation accuracy has not improved by >= {self.min_delta:g} for {self.patience + 1} "
                f"epochs after the learning rate was already cut {self.drops} times by x{self.factor:g} "
                f"(each cut after the same stall); at most {self.max_epochs} epochs")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Plateau:
    """Drives an optimizer's learning rate from validation accuracy and says when to stop."""

    def __init__(self, optimizer: torch.optim.Optimizer, rule: PlateauRule):
        self.rule, self.optimizer, self.drops, self.epochs = rule, optimizer, 0, 0
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=rule.factor, patience=rule.patience,
            threshold=rule.min_delta, threshold_mode="abs",
        )

    def step(self, val_accuracy: float) -> bool:
        """Record one epoch; True when training should stop (plateau reached or epoch cap hit)."""
        self.epochs += 1
        before = [group["lr"] for group in self.optimizer.param_groups]
        if self.scheduler.num_bad_epochs >= self.rule.patience and not self._improves(val_accuracy) \
                and self.drops >= self.rule.drops:
            return True  # a further cut was due: plateaued at the lowest learning rate the rule allows
        self.scheduler.step(val_accuracy)
        if [group["lr"] for group in self.optimizer.param_groups] != before:
            self.drops += 1
        return self.epochs >= self.rule.max_epochs

    @property
    def converged(self) -> bool:
        return self.drops >= self.rule.drops and self.epochs < self.rule.max_epochs

    def _improves(self, value: float) -> bool:
        return self.scheduler.best is None or value > self.scheduler.best + self.rule.min_delta

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "drops": self.drops, "epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.drops, self.epochs = int(state["drops"]), int(state["epochs"])


def stopping_epoch(curve: list[float], rule: PlateauRule, lr: float = 0.1) -> Optional[int]:
    """The 1-based epoch at which `Plateau` stops on this validation curve (None: the curve ends first)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    plateau = Plateau(optimizer, rule)
    for epoch, value in enumerate(curve, start=1):
        if plateau.step(value):
            return epoch
    return None
