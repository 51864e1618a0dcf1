# minissd: `make demo` trains a detector on the built-in data, `make test` runs the tests.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# exact versions of every package the targets below install, transitive ones included, for
# Python 3.10-3.13 on Linux, macOS and Windows; pyproject.toml keeps the ranges; `make lock` refreshes
LOCK    := requirements-lock.txt
INSTALL := -m pip install -q -c $(LOCK)

# the demo: synthetic shapes -> ssd-tiny on the CPU -> detections picture -> VOC07 mAP (last line)
DEMO_DATA   ?= data/shapes
DEMO_RUN    ?= runs/demo
DEMO_EPOCHS ?= 12
DEMO_ARGS   ?= --lr 1e-2 --augment flip --batch-size 32

.PHONY: venv test test-oldest demo notebooks lock clean

venv: $(STAMP)

# pip and setuptools first, at the lock's versions; then minissd, built by that setuptools
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(INSTALL) pip setuptools
	$(PY) $(INSTALL) --no-build-isolation -e ".[dev]"
	touch $(STAMP)

# one BLAS thread: minissd pins OpenBLAS to one thread once its layers run (it has its own
# threads, minissd.nn.threads.set_num_threads), and the tests' other small GEMMs are slowed down badly by
# OpenBLAS's spinning threads whenever anything else shares the cores
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -q

# training runs on minissd's own threads, one per core (MINISSD_NUM_THREADS=1 for one);
# each demo replaces the last one's run (--overwrite)
demo: $(STAMP)
	test -f $(DEMO_DATA)/classes.txt || $(PY) -m minissd data shapes --out $(DEMO_DATA)
	$(PY) -m minissd train --data $(DEMO_DATA) --config ssd-tiny --epochs $(DEMO_EPOCHS) \
		--out $(DEMO_RUN) --overwrite $(DEMO_ARGS)
	$(PY) -m minissd detect --data $(DEMO_DATA) --split test --limit 8 \
		--checkpoint $(DEMO_RUN)/last.npz --out $(DEMO_RUN)/detections --grid $(DEMO_RUN)/detections.png
	$(PY) -m minissd evaluate --checkpoint $(DEMO_RUN)/last.npz --data $(DEMO_DATA) --split test \
		--plot $(DEMO_RUN)/pr_curves.png

notebooks: $(STAMP)
	$(PY) $(INSTALL) --no-build-isolation -e ".[notebooks]"
	$(VENV)/bin/jupyter notebook chapters/

# the test suite on the oldest versions pyproject.toml admits (uv's lowest-direct resolution:
# numpy, Pillow, matplotlib, pytest ... at their floors), on the oldest Python minissd supports,
# in a new venv each time (an old one would keep whatever newer versions it holds)
OLDEST_PYTHON ?= python3.10
OLDEST_VENV   ?= .venv-oldest
test-oldest:
	rm -rf $(OLDEST_VENV)
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python $(INSTALL) uv
	$(OLDEST_VENV)/bin/uv pip install -q --python $(OLDEST_VENV)/bin/python --resolution lowest-direct -e ".[dev]"
	OPENBLAS_NUM_THREADS=1 $(OLDEST_VENV)/bin/python -m pytest -q

# refresh the lock (needs the network): the newest versions, per Python version where they
# differ, of pip, setuptools, uv and minissd's dependencies with the dev and notebooks extras;
# then check that each has a wheel for Python 3.10-3.13 on Linux, macOS (Intel, Arm) and Windows
# (argon2-cffi-bindings, which jupyter needs, has none for Intel Macs from version 26 on)
LOCK_TOOLS := printf 'pip\nsetuptools\nuv\nargon2-cffi-bindings<26\n'
lock: $(STAMP)
	$(PY) $(INSTALL) uv
	$(LOCK_TOOLS) | $(VENV)/bin/uv pip compile -q pyproject.toml - --extra dev --extra notebooks \
		--universal --python-version 3.10 --upgrade --custom-compile-command "make lock" -o $(LOCK)
	for platform in x86_64-manylinux_2_28 x86_64-apple-darwin aarch64-apple-darwin x86_64-pc-windows-msvc; do \
		for version in 3.10 3.11 3.12 3.13; do \
			$(LOCK_TOOLS) | $(VENV)/bin/uv pip compile -q pyproject.toml - --extra dev --extra notebooks \
				-c $(LOCK) --python-platform $$platform --python-version $$version \
				--only-binary :all: --no-header -o /dev/null || exit 1; \
		done; \
	done

clean:
	rm -rf $(VENV) $(OLDEST_VENV) runs build *.egg-info
