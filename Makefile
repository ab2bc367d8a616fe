# `make demo` and `make test` work on a fresh machine: they create .venv,
# install edgecomp with its test extras, install Debian's Fashion-MNIST when
# it is missing (apt, as root), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint install data ssh-tools clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

data:
	@if [ -d $(FMNIST) ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is missing from $(FMNIST): run 'sudo apt-get install dataset-fashion-mnist'," \
		     "or put the four IDX files in a folder and pass --set data.root=FOLDER"; exit 1; \
	fi

ssh-tools:  # the ssh tests start a real sshd on 127.0.0.1
	@if [ -x /usr/sbin/sshd ] || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then exit 0; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client

# --resume only when an earlier demo left a run: a fresh one starts plainly
demo: install data
	$(VENV)/bin/edgecomp compress --recipe quickstart.yaml --out runs/quickstart \
		$(if $(wildcard runs/quickstart),--resume)

lint: install  # pyflakes, isort, pyupgrade, bugbear over the package and tests; mypy over the package
	$(PY) -m ruff check edgecomp tests
	$(PY) -m mypy

test: lint data ssh-tools
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install data
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
