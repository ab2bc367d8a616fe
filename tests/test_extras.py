"""The TensorRT extra: what `pip install 'edgecomp[tensorrt]'` asks for, and that no test, demo or CI path asks."""

from __future__ import annotations

import re

import pytest
from conftest import REPO
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

X86_LINUX = {"platform_machine": "x86_64", "sys_platform": "linux"}
JETSON = {"platform_machine": "aarch64", "sys_platform": "linux"}


def extras() -> dict[str, list[Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {name: [Requirement(text) for text in texts] for name, texts in project["optional-dependencies"].items()}


def test_the_tensorrt_extra_is_for_x86_hosts_and_a_version_the_builder_serves():
    requirements = {r.name: r for r in extras()["tensorrt"]}
    assert set(requirements) == {"tensorrt", "cuda-python"}
    for requirement in requirements.values():
        assert requirement.marker.evaluate(X86_LINUX) and not requirement.marker.evaluate(JETSON)  # JetPack's own
    tensorrt = requirements["tensorrt"].specifier
    assert "8.6.1" in tensorrt and "10.16.1.11" in tensorrt
    assert "11.0.0.114" not in tensorrt  # 11.x has no FP16/INT8 builder flags: build.py refuses fp16/int8 there
    assert "12.9.0" in requirements["cuda-python"].specifier and "13.0.0" not in requirements["cuda-python"].specifier


def test_no_test_demo_or_ci_path_installs_the_tensorrt_extra():
    assert not any(r.name.startswith("tensorrt") for name, rs in extras().items() if name != "tensorrt" for r in rs)
    sources = [REPO / "Makefile", *(REPO / ".github").rglob("*.y*ml")]
    installs = [line for path in sources if path.is_file() for line in path.read_text().splitlines()
                if "pip install" in line or "pip3 install" in line]
    assert installs, "the Makefile installs edgecomp somewhere"
    for line in installs:
        assert "tensorrt" not in line.lower(), line
        assert all(extra == "test" for group in re.findall(r"\[([^\]]*)\]", line) for extra in group.split(",")), line
