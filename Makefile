# Two commands for a fresh machine (both install what they need into .venv first):
#   make course   run every notebook in the cpu profile; executed copies go to runs/executed/
#   make test     ruff (make lint), helper tests + every notebook under nbval + learning-effect thresholds (cpu
#                 profile, float32; two notebooks at a time, scripts/run_tests.py), notebook 01 again in bfloat16
#                 mixed precision with its thresholds, then every notebook again in the t4-sim and l4-sim profiles
#                 (a T4's and an L4's settings on the CPU, toy sizes)
# Others: make test-fast (ruff + unit tests, no notebook runs, about a minute), make lab (JupyterLab on the course,
# with the venv's kernel; LAB_ARGS="--no-browser" on a server), make test-sim (just the -sim profiles), make
# test-bf16, make bench (course + record runtimes, the roofline and the results into benchmarks/ and the README,
# and refresh the notebooks' committed outputs), make datasets.
PYTHON ?= python3
COURSE_PROFILE ?= cpu
export COURSE_PROFILE
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: course test test-fast test-sim test-bf16 bench datasets install lab lint
SIM_PROFILES := t4-sim l4-sim

install: $(STAMP)

$(STAMP): requirements.txt requirements-colab.txt requirements-offline.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-offline.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The notebooks name the kernel "python3": make install registers the venv's Python under that name inside the venv,
# and JupyterLab run from the venv prefers it to any user-wide "python3" (tests/test_lab.py checks both).
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(LAB_ARGS)

course: $(STAMP)
	rm -rf runs/checkpoints
	$(BIN)/python scripts/run_course.py

# ruff's bug-finding rules (pyproject.toml) over the package, scripts, tests and notebooks: a second
lint: $(STAMP)
	$(BIN)/ruff check .

# The quick loop while changing the package: ruff and the unit tests, without the tests that read the notebooks'
# run records (marker "notebooks"), the slow ones ("slow": training runs, subprocesses, servers) and the Colab rebuild.
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest tests -m "not notebooks and not slow and not colab"

# The cpu part: two notebooks at a time, one thread each, each after the notebooks whose records it reads, then the
# tests that check the records (scripts/run_tests.py says why; `python scripts/run_tests.py --serial` is plain pytest).
test: $(STAMP) lint
	rm -rf runs/*.json runs/checkpoints
	$(BIN)/python scripts/run_tests.py
	$(MAKE) test-bf16
	$(MAKE) test-sim

# The cpu profile trains in float32 unless COURSE_CPU_PRECISION says otherwise (README, "Precision on a CPU"). The
# bfloat16 mixed-precision path stays alive: notebook 01 (pre-training, full fine-tuning) runs in it, records under
# runs/bf16, and its learning-effect thresholds are checked. On a CPU without bfloat16 kernels (AVX2 only: about 2
# GFLOP/s in bfloat16 against 45 in float32, so 01 would take hours) it says so and stops: `auto` never picks
# bfloat16 there, and a student's notebook on such a CPU runs float32.
test-bf16: $(STAMP)
	rm -rf runs/bf16
	@$(BIN)/python -c "import sys; from helpers.profiles import detect_hardware; g = detect_hardware().cpu_gflops; \
		print(f'matrix products here: bfloat16 {g[\"bfloat16\"]:.0f}, float32 {g[\"float32\"]:.0f} GFLOP/s'); \
		sys.exit(3 if g['bfloat16'] < g['float32'] else 0)"; status=$$?; \
	if [ $$status = 3 ]; then \
		echo "test-bf16 NOT RUN: this CPU multiplies bfloat16 slower than float32 (no bfloat16 kernels), so"; \
		echo "COURSE_CPU_PRECISION=auto never picks it here. Run make test-bf16 on a CPU with AVX512-BF16 or AMX."; \
	elif [ $$status != 0 ]; then exit $$status; \
	else \
		set -x; COURSE_CPU_PRECISION=bfloat16 COURSE_RUNS_DIR=$(CURDIR)/runs/bf16 \
			$(BIN)/python -m pytest tests/test_learning_effects.py -k "pretrain or sft or what_ran"; \
	fi

# Each -sim profile writes its records and checkpoints under runs/sim/<profile>, apart from the cpu ones the tests read.
# Their models are tiny: the work is Python, one thread each, so the two profiles run side by side, one per core
# (output: runs/sim/<profile>.log, printed at the end). OMP_WAIT_POLICY=PASSIVE: no OpenMP thread spins waiting for
# work (bitsandbytes' and torch's spun against each other: a 4-bit dequantize took ~15 ms instead of ~0.1 ms).
test-sim: $(STAMP)
	rm -rf runs/sim && mkdir -p runs/sim
	status=0; pids=""; for profile in $(SIM_PROFILES); do \
		OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE COURSE_PROFILE=$$profile COURSE_RUNS_DIR=$(CURDIR)/runs/sim/$$profile \
			$(BIN)/python -m pytest notebooks homework/solution > runs/sim/$$profile.log 2>&1 & pids="$$pids $$!"; \
	done; \
	for pid in $$pids; do wait $$pid || status=1; done; \
	for profile in $(SIM_PROFILES); do echo "== $$profile"; tail -n 40 runs/sim/$$profile.log; done; \
	exit $$status

# make bench: the course (and the homework's solution) timed, recorded into benchmarks/ and the README (its notebook
# table and Results), and the executed outputs copied into the committed notebooks (scripts/refresh_outputs.py).
bench: $(STAMP)
	rm -rf runs/checkpoints
	$(BIN)/python scripts/run_course.py --record
	$(BIN)/python scripts/refresh_outputs.py

datasets: $(STAMP)
	$(BIN)/python scripts/make_datasets.py
