# Two commands for a fresh machine (both install what they need into .venv first):
#   make course   run every notebook in the cpu profile; executed copies go to runs/executed/
#   make test     helper tests + every notebook under nbval + learning-effect thresholds
# Others: make bench (course + record runtimes into benchmarks/ and the README), make datasets.
PYTHON ?= python3
COURSE_PROFILE ?= cpu
export COURSE_PROFILE
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: course test bench datasets install

install: $(STAMP)

$(STAMP): requirements.txt requirements-colab.txt requirements-offline.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-offline.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

course: $(STAMP)
	rm -rf runs/checkpoints
	$(BIN)/python scripts/run_course.py

test: $(STAMP)
	rm -rf runs/*.json runs/checkpoints
	$(BIN)/python -m pytest

bench: $(STAMP)
	rm -rf runs/checkpoints
	$(BIN)/python scripts/run_course.py --record

datasets: $(STAMP)
	$(BIN)/python scripts/make_datasets.py
