"""Issue 15: batches reach the model in NCHW strides; strided 1x1 convs with few input channels never
reach oneDNN's broken NHWC kernel; a hang stops with one line instead of running forever."""

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn as nn
from conftest import REPO, tiny_recipe_dict

from edgecomp.compression.augment import Augmenter
from edgecomp.compression.cpu_guard import risky_convs, unit_stride_1x1
from edgecomp.compression.train import InputSpec
from edgecomp.compression.watchdog import Watchdog
from edgecomp.core.data import nchw_strides
from edgecomp.core.models import CifarResNet
from edgecomp.core.recipe import AugmentSection, ModelSection


def spec_for(channels: int) -> InputSpec:
    cfg = ModelSection(arch="cifar_resnet8", num_classes=10, in_channels=channels, input_size=28)
    return InputSpec.create(cfg, (0.5,), (0.25,), torch.device("cpu"))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("magnitude", [0.0, 9.0])
def test_training_input_is_nchw(channels, magnitude):
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    augment = Augmenter(AugmentSection(crop_padding=2, flip=True))
    batch = spec_for(channels).prepare(images, augment, magnitude, torch.Generator().manual_seed(0))
    assert batch.shape == (16, channels, 28, 28)
    assert batch.stride() == nchw_strides(batch.shape)
    out = nn.Conv2d(channels, 8, 3, padding=1)(batch)
    assert out.is_contiguous() and not out.is_contiguous(memory_format=torch.channels_last)


def test_random_crop_of_one_channel_is_not_channels_last():
    from edgecomp.compression.augment import random_crop

    images = torch.rand(4, 1, 28, 28)
    out = random_crop(images, torch.full((4, 2), 2), 2)
    assert out.stride() == nchw_strides(out.shape)
    assert torch.equal(out, images)  # offset = pad: the crop is the original image


def _pruned_resnet() -> nn.Module:
    """ResNet-20 with the pruned shapes of the issue: stride-2 1x1 shortcuts fed 4 and 8 channels."""
    return CifarResNet(20, 10, in_channels=1, width=4)


def _oracle(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Outputs and the risky convs' weight gradients, computed where oneDNN's strided 1x1 backward kernel
    cannot run: a float64 copy in NCHW (oneDNN has no float64 convolution). Computing them with the unguarded
    model in channels-last would run the very kernel the guard avoids, and hang on an AVX2 host."""
    reference = copy.deepcopy(model).double().to(memory_format=torch.contiguous_format)
    out = reference(x.double().contiguous())
    out.sum().backward()
    return out.float(), [c.weight.grad.float() for c in risky_convs(reference)]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_unit_stride_guard_is_exact(layout):
    torch.manual_seed(0)
    model = _pruned_resnet().to(memory_format=layout)
    risky = risky_convs(model)
    assert [(c.in_channels, c.out_channels) for c in risky] == [(4, 8), (8, 16)]
    x = torch.randn(8, 1, 28, 28).contiguous(memory_format=layout)
    expected, grads = _oracle(model, x)
    with unit_stride_1x1(model, torch.device("cpu")) as patched:
        assert patched == risky
        got = model(x)
        got.sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    for conv, grad in zip(risky, grads):
        torch.testing.assert_close(conv.weight.grad, grad, rtol=1e-3, atol=1e-4)
    assert all("forward" not in conv.__dict__ for conv in risky), "the patch must be gone after the context"


GUARDED_LOOP = textwrap.dedent("""
    import torch
    import edgecomp
    from edgecomp.core.models import CifarResNet
    torch.manual_seed(0)
    model = CifarResNet(20, 10, in_channels=1, width=4).to(memory_format=torch.channels_last)
    x = torch.randn(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with edgecomp.cpu_guard(model) as patched:
        assert len(patched) == 2
        for _ in range(20):
            model(x).sum().backward()
    print("finished")
""")


def test_guard_keeps_channels_last_training_off_the_broken_avx2_kernel():
    """ONEDNN_MAX_CPU_ISA=AVX2 gives any x86 host AVX2's kernels, where the unguarded loop above hangs or
    aborts ("double free"): 5 of 5 fresh processes did within 40 s here. Guarded, it finishes in seconds."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run([sys.executable, "-c", GUARDED_LOOP], capture_output=True, text=True, timeout=90,
                          cwd=REPO, env=env)
    assert proc.returncode == 0 and "finished" in proc.stdout, proc.stderr[-2000:]


FINETUNE = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(int(sys.argv[1]))
    from edgecomp.core.models import CifarResNet
    from edgecomp.core.recipe import validate
    from edgecomp.compression.pipeline import _prepare  # noqa: F401 - the same imports the pipeline uses
    from edgecomp.compression.augment import Augmenter
    from edgecomp.core.data import load_data
    from edgecomp.compression.objective import Objective
    from edgecomp.compression.train import InputSpec, TrainJob, train
    import yaml
    recipe = validate(yaml.safe_load(sys.argv[2]))
    data = load_data(recipe.data, recipe.model)
    spec = InputSpec.create(recipe.model, data.mean, data.std, torch.device("cpu"))
    torch.manual_seed(0)
    model = CifarResNet(20, 10, in_channels=1, width=4)
    job = TrainJob(data=data.train, spec=spec, augment=Augmenter(recipe.augment), magnitude=9.0,
                   optim=recipe.finetune.optim, epochs=1, seed=0, label="step 3", objective=Objective(recipe.teacher, 0.1))
    history = train(model, job)
    assert torch.isfinite(torch.tensor(history[-1].loss))
    print("finished", history[-1].loss)
""")


@pytest.mark.e2e
@pytest.mark.parametrize("threads", [1, 2])
def test_pruned_shapes_finetune_on_grayscale(threads, fashion_root):
    import yaml

    recipe = tiny_recipe_dict(data={"train_subset": 640, "batch_size": 64})
    proc = subprocess.run([sys.executable, "-c", FINETUNE, str(threads), yaml.safe_dump(recipe)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished" in proc.stdout


def test_watchdog_reports_a_stall_once():
    lines = []
    with Watchdog("step 3", factor=3, floor_s=0.3, first_s=5, on_hang=lines.append) as watchdog:
        for batch in range(3):
            time.sleep(0.02)
            watchdog.beat(f"epoch 1, batch {batch + 1}")
        deadline = time.monotonic() + 5
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(lines) == 1
    assert "step 3" in lines[0] and "since epoch 1, batch 3 finished" in lines[0] and "checkpoint" in lines[0]


def test_watchdog_stays_quiet_while_paused():
    lines = []
    with Watchdog("step 2", factor=3, floor_s=0.3, first_s=5, on_hang=lines.append) as watchdog:
        watchdog.beat("epoch 1, batch 1")
        with watchdog.paused():  # a validation pass longer than the training limit
            time.sleep(1.0)
        watchdog.beat("epoch 2, batch 1")
    assert lines == []


def test_watchdog_stays_quiet_while_batches_arrive():
    lines = []
    with Watchdog("step 1", factor=3, floor_s=0.3, first_s=5, on_hang=lines.append) as watchdog:
        for batch in range(20):
            time.sleep(0.03)
            watchdog.beat(f"epoch 1, batch {batch + 1}")
    time.sleep(0.5)  # after the context ends nothing fires either
    assert lines == []


STOPPED_LOOP = textwrap.dedent("""
    import sys
    from edgecomp.compression.watchdog import Watchdog

    with Watchdog("step 1", factor=3, floor_s=2, first_s=2) as watchdog:
        watchdog.beat("epoch 1, batch 1")
        print("ready", flush=True)
        sys.stdin.readline()  # the test stops this process, resumes it, then writes a line
        watchdog.beat("epoch 1, batch 2")
    print("finished", flush=True)
""")


def test_a_stopped_and_resumed_run_is_not_taken_for_a_hang():
    """Ctrl-Z then fg: the watchdog thread wakes after the stop before the loop can beat, and must not count the
    8 s the process was stopped against the 2 s limit (without that, the process exits 1)."""
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_LOOP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGSTOP)
        time.sleep(8)
        proc.send_signal(signal.SIGCONT)
        time.sleep(1)  # the watchdog thread has woken and judged the gap by now
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "finished" in out, err


HANG_MODEL = textwrap.dedent("""
    import time
    import torch.nn as nn
    from edgecomp.core.models import CifarResNet

    class HangsInFinetuning(CifarResNet):
        calls = 0

        def forward(self, x):
            import torch
            if self.training and torch.is_grad_enabled():
                HangsInFinetuning.calls += 1
                if HangsInFinetuning.calls == 3:  # a native kernel that never returns
                    time.sleep(3600)
            return super().forward(x)

    def build(num_classes):
        return HangsInFinetuning(8, num_classes, in_channels=1)
""")


@pytest.mark.e2e
def test_a_hang_in_finetuning_stops_with_one_line_and_keeps_the_checkpoint(tmp_path, write_recipe, fashion_root):
    (tmp_path / "hang_model.py").write_text(HANG_MODEL)
    recipe = tiny_recipe_dict(model={"arch": "hang_model:build"}, dense={"epochs": 0},
                              prune={"steps": 1, "importance": "l2"})
    path = write_recipe(recipe)
    env_args = ["env", f"PYTHONPATH={tmp_path}", "EDGECOMP_WATCHDOG_FLOOR_S=2", "EDGECOMP_WATCHDOG_FACTOR=5",
                "EDGECOMP_WATCHDOG_FIRST_S=60"]
    start = time.perf_counter()
    proc = subprocess.run([*env_args, sys.executable, "-m", "edgecomp", "compress", "--recipe", str(path),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert time.perf_counter() - start < 240
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "step 1" in errors[0] and "batch 2 finished" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "run" / "checkpoints" / "step_000.pt").is_file()
