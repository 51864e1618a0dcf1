# minissd: `make demo` trains a detector on the built-in data, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# the demo: synthetic shapes -> ssd-tiny on the CPU -> detections picture -> VOC07 mAP (last line)
DEMO_DATA   ?= data/shapes
DEMO_RUN    ?= runs/demo
DEMO_EPOCHS ?= 12
DEMO_ARGS   ?= --lr 1e-2 --augment flip --batch-size 32

.PHONY: venv test demo notebooks bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
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
	$(PY) -m pip install -q -e ".[notebooks]"
	$(VENV)/bin/jupyter notebook chapters/

clean:
	rm -rf $(VENV) runs build *.egg-info
