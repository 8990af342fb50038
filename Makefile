# Two commands for a fresh machine (both install what they need into .venv first):
#   make course   run every notebook in the cpu profile; executed copies go to runs/executed/
#   make test     helper tests + every notebook under nbval + learning-effect thresholds, then every notebook
#                 again in the t4-sim and l4-sim profiles (a T4's and an L4's settings on the CPU, toy sizes)
# Others: make test-sim (just the -sim profiles), make bench (course + record runtimes into benchmarks/ and the
# README), make datasets.
PYTHON ?= python3
COURSE_PROFILE ?= cpu
export COURSE_PROFILE
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: course test test-sim bench datasets install
SIM_PROFILES := t4-sim l4-sim

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
	$(MAKE) test-sim

# Each -sim profile writes its records and checkpoints under runs/sim/<profile>, apart from the cpu ones the tests read.
# OMP_WAIT_POLICY=PASSIVE: bitsandbytes' OpenMP threads and torch's otherwise spin against each other on 2 cores (a 4-bit
# dequantize then takes ~15 ms instead of ~0.1 ms; notebook 02 in l4-sim: 6 min -> 1.4 min).
test-sim: $(STAMP)
	rm -rf runs/sim
	for profile in $(SIM_PROFILES); do \
		OMP_WAIT_POLICY=PASSIVE COURSE_PROFILE=$$profile COURSE_RUNS_DIR=$(CURDIR)/runs/sim/$$profile \
			$(BIN)/python -m pytest notebooks homework/solution || exit 1; \
	done

bench: $(STAMP)
	rm -rf runs/checkpoints
	$(BIN)/python scripts/run_course.py --record

datasets: $(STAMP)
	$(BIN)/python scripts/make_datasets.py
