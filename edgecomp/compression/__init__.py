"""The compression wing: from a dense model to a pruned, fine-tuned one.

    pipeline.py     `edgecomp compress`: dense model, pruning steps, checkpoints, resume
    study.py        the magnitude x size grid behind finding A
    train.py        the fine-tuning loop; distributed.py its DDP launcher
    convergence.py  the plateau rule; watchdog.py, cpu_guard.py keep long runs alive
    prune.py        Torch-Pruning plans to a MACs / params target
    steps.py        the fraction each pruning step keeps
    magnitude.py    magnitude schedules (A)
    augment.py      batched RandAugment and views (A)
    auxiliary.py    training-only branches, folded or dropped at export (B)
    teacher.py      the dense model's difficulty judgement (C)
    objective.py    the loss: trunk, branches, teacher terms

The wing stands on the ground (edgecomp.core) and calls the deployment wing
to measure latency; neither the ground nor deployment imports it.
"""
