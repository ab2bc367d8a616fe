"""The loss of one training batch: findings B and C put together.

Views of a batch: `weak` (the step's scheduled magnitude M_k), `strong`
(aux.strong_magnitude, only with auxiliary branches) and `clean` (crop and
flip only: the reference of the `drop` difficulty and the filter's last
fallback). With teacher logits T(.), student logits f(.), auxiliary outputs
g_j(.), difficulty weights w (1 without teacher weighting; samples the teacher
misclassifies on the clean view get 1 or 0 by `teacher_wrong`),
KD weight a and KD(p, q) = T^2 KL(softmax(q/T) || softmax(p/T)):

    CE_w(z, x) = sum_i w_i CE(z(x_i), y_i) / sum_i w_i       (w from the teacher on view x)
    L_trunk = (1 - a) * CE_w(f, x^weak) + a * KD(f(x^weak), T(x^weak))
    L_aux_j = (1 - a) * CE_w(g_j, x^strong) + a * KD(g_j(x^strong), T(x^strong))
              + head_kd * KD(g_j(x^strong), f(x^weak).detach())
    L = L_trunk + aux.weight * mean_j L_aux_j

The difficulty statistics (mean d, filtered fraction, weight range) are over
every view the teacher judged.

`filter` replaces a view's samples whose difficulty exceeds tau(s) by the
next weaker view of the same image (strong -> weak, weak -> clean) and counts
them; nothing is dropped, so each epoch still sees every sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.recipe import DifficultyCriterion, DifficultyMode, TeacherSection, TeacherWrong
from .teacher import Teacher, difficulty, sample_weights, tau, teacher_wrong


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's distillation: T^2 * KL(teacher_T || student_T)."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


@dataclass
class Views:
    weak: torch.Tensor
    labels: torch.Tensor
    strong: Optional[torch.Tensor] = None
    clean: Optional[torch.Tensor] = None


@dataclass
class Judgement:
    """The teacher on a batch's clean view: the reference for the `drop` difficulty (None for `wrong`),
    which samples it misclassifies, and its logits (the filter's last fallback)."""

    clean_logits: Optional[torch.Tensor]
    wrong: torch.Tensor
    reference_logits: torch.Tensor


@dataclass
class LossStats:
    """Per-epoch sums of what the teacher saw (finding C metrics)."""

    samples: int = 0
    difficulty_sum: float = 0.0
    filtered: int = 0
    weight_min: float = 1.0
    weight_max: float = 0.0
    teacher_calls: int = 0
    teacher_wrong: int = 0
    clean_samples: int = 0

    def as_dict(self) -> dict[str, Any]:
        if not self.teacher_calls:
            return {}
        return {"mean_difficulty": self.difficulty_sum / max(self.samples, 1),
                "filtered_fraction": self.filtered / max(self.samples, 1),
                "weight_min": self.weight_min, "weight_max": self.weight_max,
                "teacher_wrong_fraction": self.teacher_wrong / max(self.clean_samples, 1) if self.clean_samples
                else None}

    def merge(self, other: LossStats) -> None:
        self.samples += other.samples
        self.difficulty_sum += other.difficulty_sum
        self.filtered += other.filtered
        self.weight_min = min(self.weight_min, other.weight_min)
        self.weight_max = max(self.weight_max, other.weight_max)
        self.teacher_calls += other.teacher_calls
        self.teacher_wrong += other.teacher_wrong
        self.clean_samples += other.clean_samples


@dataclass
class Objective:
    cfg: TeacherSection
    macs_ratio: float = 1.0
    teacher: Optional[Teacher] = None
    branched: Any = None  # auxiliary.Branched while branches are attached
    aux_weight: float = 1.0
    head_kd: float = 0.0
    label_smoothing: float = 0.0
    stats: LossStats = field(default_factory=LossStats)

    @property
    def mode(self) -> DifficultyMode:
        return self.cfg.difficulty.mode if self.teacher is not None else DifficultyMode.none

    @property
    def judges(self) -> bool:
        return self.teacher is not None and (self.cfg.kd_weight > 0 or self.mode != DifficultyMode.none)

    def needs_clean_view(self) -> bool:
        """The clean view (crop + flip only) is the difficulty's reference and the filter's fallback."""
        difficulty_cfg = self.cfg.difficulty
        return self.mode == DifficultyMode.filter or (
            self.mode != DifficultyMode.none and difficulty_cfg.criterion == DifficultyCriterion.drop)

    def __call__(self, model: nn.Module, views: Views) -> torch.Tensor:
        judge = self._reference(views)
        weak, weak_teacher = self._judge(views.weak, views.clean, judge, views.labels)
        logits = model(weak)
        loss = self._supervised(logits, weak_teacher, views.labels, self._weights(weak_teacher, judge, views.labels))
        if self.branched is not None and views.strong is not None:
            strong, strong_teacher = self._judge(views.strong, weak, judge, views.labels, weak_teacher)
            weights = self._weights(strong_teacher, judge, views.labels)
            aux = [self._aux_term(out, logits, strong_teacher, views.labels, weights)
                   for out in self.branched.strong_outputs(strong)]
            loss = loss + self.aux_weight * torch.stack(aux).mean()
        return loss

    def _reference(self, views: Views) -> Optional[Judgement]:
        """The teacher on the clean view, once per batch: what the difficulty of every view is measured from."""
        if not self.judges or views.clean is None:
            return None
        assert self.teacher is not None  # judges implies a teacher
        clean_logits = self.teacher.logits(views.clean)
        wrong = teacher_wrong(clean_logits, views.labels)
        self.stats.teacher_wrong += int(wrong.sum())
        self.stats.clean_samples += len(wrong)
        use_clean = self.cfg.difficulty.criterion == DifficultyCriterion.drop
        return Judgement(clean_logits if use_clean else None, wrong, clean_logits)

    def _difficulty(self, teacher_logits, judge: Optional[Judgement], labels) -> torch.Tensor:
        return difficulty(teacher_logits, labels, judge.clean_logits if judge is not None else None)

    def _judge(self, inputs, weaker, judge, labels, weaker_teacher=None):
        """Teacher logits for a view; under `filter`, too-hard samples swapped for their weaker view."""
        if not self.judges:
            return inputs, None
        assert self.teacher is not None  # judges implies a teacher
        teacher_logits = self.teacher.logits(inputs)
        if self.mode == DifficultyMode.filter and weaker is not None:
            hard = self._difficulty(teacher_logits, judge, labels) > tau(self.cfg.difficulty, self.macs_ratio)
            if judge is not None and self.cfg.difficulty.criterion == DifficultyCriterion.drop:
                hard &= ~judge.wrong  # not measurable: never swapped
            if hard.any():
                inputs, teacher_logits = inputs.clone(), teacher_logits.clone()
                inputs[hard] = weaker[hard]
                fallback = weaker_teacher if weaker_teacher is not None else judge.reference_logits
                teacher_logits[hard] = fallback[hard]
                self.stats.filtered += int(hard.sum())
        return inputs, teacher_logits

    def _weights(self, teacher_logits, judge: Optional[Judgement], labels) -> Optional[torch.Tensor]:
        if teacher_logits is None:
            return None
        d = self._difficulty(teacher_logits, judge, labels)
        self.stats.samples += len(d)
        self.stats.difficulty_sum += float(d.sum())
        self.stats.teacher_calls += 1
        weights = sample_weights(d, self.cfg.difficulty, self.macs_ratio) if self.mode == DifficultyMode.weight \
            else None
        if judge is not None and self.mode != DifficultyMode.none \
                and self.cfg.difficulty.criterion == DifficultyCriterion.drop:
            keep = self.cfg.difficulty.teacher_wrong == TeacherWrong.keep
            base = weights if weights is not None else torch.ones_like(d)
            weights = torch.where(judge.wrong, torch.full_like(base, 1.0 if keep else 0.0), base)
        if weights is not None:
            self.stats.weight_min = min(self.stats.weight_min, float(weights.min()))
            self.stats.weight_max = max(self.stats.weight_max, float(weights.max()))
        return weights

    def _ce(self, logits, labels, weights) -> torch.Tensor:
        if weights is None:
            return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        per_sample = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        return (weights * per_sample).sum() / weights.sum().clamp_min(1e-8)

    def _supervised(self, logits, teacher_logits, labels, weights) -> torch.Tensor:
        loss = self._ce(logits, labels, weights)
        alpha = self.cfg.kd_weight
        if teacher_logits is not None and alpha > 0:
            loss = (1 - alpha) * loss + alpha * kd_loss(logits, teacher_logits, self.cfg.temperature)
        return loss

    def _aux_term(self, aux_logits, main_logits, teacher_logits, labels, weights) -> torch.Tensor:
        loss = self._supervised(aux_logits, teacher_logits, labels, weights)
        if self.head_kd > 0:
            loss = loss + self.head_kd * kd_loss(aux_logits, main_logits.detach(), self.cfg.temperature)
        return loss
