# The project's commands. `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export RECSYS_DATA_DIR ?= $(CURDIR)/data
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONWARNINGS ?= ignore::DeprecationWarning

# Demo data: a few thousand users, a few hundred products, two weeks ending yesterday (UTC).
DEMO_USERS ?= 3000
DEMO_PRODUCTS ?= 400
DEMO_DAYS ?= 14
SEED ?= 42

.PHONY: help install data demo run backfill test test-fast airflow-db clean

help:
	@echo "make demo               install, generate data, run the daily DAG for the latest day, print a summary"
	@echo "make test               install, run the whole test suite"
	@echo "make data               generate the synthetic landing zone into \$$RECSYS_DATA_DIR ($(RECSYS_DATA_DIR))"
	@echo "make run DS=YYYY-MM-DD  run the daily DAG for that date on \$$RECSYS_DATA_DIR"
	@echo "make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD"
	@echo "                        recompute those days under a real scheduler (started and stopped for you)"
	@echo "make ui                 the Airflow UI with the Recommendations page (http://localhost:8080)"
	@echo "make browser            install Debian's chromium for the browser test (run by make test)"
	@echo "make blas               install Debian's OpenBLAS as Spark ML's native BLAS/LAPACK (run by make bench-models)"
	@echo "make test-fast          the tests without the e2e ones (no Airflow services started)"
	@echo "make bench-features     Spark feature build at 1M and 10M events vs DuckDB SQL (the benchmarks print their figures)"
	@echo "make bench-models       Spark MLlib ALS vs implicit; LSTM throughput at 10k and 100k products"
	@echo "make bench-validation   a first run's 30 history days validated one by one vs in one pass"
	@echo "make bench-e2e          a backfill under the real scheduler (hours at the default 1M events;"
	@echo "                        BENCH_ARGS=\"--backfill-days 2\" or \"--budget-minutes 60\" for less)"
	@echo "make ui-screenshot      docs/ui_recommendations.png from the data in \$$RECSYS_DATA_DIR"
	@echo "make clean              remove \$$RECSYS_DATA_DIR and \$$AIRFLOW_HOME (only inside this checkout)"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

install: $(STAMP)

airflow-db: install
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	$(BIN)/airflow pools set recsys_compute 4 "recsys Spark, training and fusion" > /dev/null

# `airflow dags test` runs one task at a time, so the LSTM may use every core (under a scheduler the
# four training tasks share them: RECSYS_TORCH_THREADS defaults to half).
DAGS_TEST = RECSYS_TORCH_THREADS=$${RECSYS_TORCH_THREADS:-$$(nproc)} $(BIN)/airflow dags test

data: install
	$(BIN)/python -m recsys.data.synthetic --users $(DEMO_USERS) --products $(DEMO_PRODUCTS) --days $(DEMO_DAYS) \
		--seed $(SEED) --bad-rows-fraction 0.002 --out $(RECSYS_DATA_DIR)

run: airflow-db
	@test -n "$(DS)" || (echo "usage: make run DS=YYYY-MM-DD"; exit 2)
	$(DAGS_TEST) recsys_daily $(DS)
	$(BIN)/python -m recsys.report --ds $(DS)

demo: data airflow-db
	@ds=$$(ls -1 $(RECSYS_DATA_DIR)/raw/events | sed -n 's/^ds=//p' | sort | tail -n 1); \
	echo "running recsys_daily for ds=$$ds (logs: $(AIRFLOW_HOME)/demo-$$ds.log)"; \
	$(DAGS_TEST) recsys_daily $$ds > $(AIRFLOW_HOME)/demo-$$ds.log 2>&1 \
		|| (tail -n 80 $(AIRFLOW_HOME)/demo-$$ds.log; exit 1); \
	$(BIN)/python -m recsys.report --ds $$ds

# Each day from that day's history only, one run at a time, through `airflow backfill create` and a
# LocalExecutor scheduler this target starts and stops (logs in $(AIRFLOW_HOME)/services/).
backfill: airflow-db
	@test -n "$(FROM)" -a -n "$(TO)" || (echo "usage: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD"; exit 2)
	$(BIN)/python -m recsys.local_airflow backfill --from-date $(FROM) --to-date $(TO)
	$(BIN)/python -m recsys.report --ds $(TO)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e"

# Only folders inside this checkout: RECSYS_DATA_DIR may point at a real landing zone.
clean:
	@for folder in "$(RECSYS_DATA_DIR)" "$(AIRFLOW_HOME)"; do \
		case "$$(realpath -m "$$folder")" in \
			"$(realpath $(CURDIR))"/?*) ;; \
			*) echo "make clean: $$folder is not a folder inside this checkout ($(CURDIR)); remove it by hand if you mean to"; exit 1;; \
		esac; \
	done
	rm -rf "$(RECSYS_DATA_DIR)" "$(AIRFLOW_HOME)"

# Model benchmarks: Spark MLlib ALS vs implicit (time, NDCG@10) and LSTM throughput vs catalog size.
# Prints a table and writes bench/results/models.json; pass sizes with e.g. BENCH_ARGS="--users 4000 --days 14".
BENCH_ARGS ?=
.PHONY: bench-models
bench-models: install blas
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt -c constraints.txt
	$(BIN)/python bench/models.py $(BENCH_ARGS)

.PHONY: bench-features
bench-features: install  ## feature build at 1M and 10M events: full, incremental, DuckDB reference (several minutes)
	$(BIN)/python bench/features.py

.PHONY: bench-validation
bench-validation: install  ## a first run's 30 history days: validated one by one vs in one pass (a few minutes)
	$(BIN)/python bench/validation.py $(BENCH_ARGS)

# A backfill under the real scheduler (about 1M events over 37 days by default, the last 30 backfilled: hours on 2 cores);
# e.g. BENCH_ARGS="--backfill-days 3" for the per-day figures, or "--budget-minutes 60" to stop after an hour and
# report the days finished by then. Prints wall time, task medians, parallel efficiency, each day's time.
.PHONY: bench-e2e
bench-e2e: install
	$(BIN)/python bench/e2e.py $(BENCH_ARGS)

# Spark ML (ALS in train_collaborative) calls BLAS/LAPACK through dev.ludovic.netlib: the system's
# libblas.so.3/liblapack.so.3 when it finds them, else its Java fallback, with which ALS fits are slower
# (README, "Benchmarks"). Debian's reference BLAS (libblas3) goes beside OpenBLAS: get_spark hands it to
# Spark ML, whose ALS makes millions of tiny BLAS calls that it serves with less overhead per call
# (recsys.features.spark.spark_ml_blas_library). Everything works without; one BLAS thread per task.
.PHONY: blas
blas:  ## native BLAS/LAPACK for Spark ML: Debian's OpenBLAS and reference BLAS (apt-get when root, else what to install)
	@ldconfig=$$(command -v ldconfig || echo /sbin/ldconfig); \
	if $$ldconfig -p | grep -q 'libblas\.so\.3 ' && $$ldconfig -p | grep -q 'liblapack\.so\.3 ' && ls /usr/lib/*/blas/libblas.so.3 >/dev/null 2>&1; then \
		echo "blas: native libblas.so.3 and liblapack.so.3 present, and the reference BLAS for Spark ML"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread libblas3; \
	else \
		echo "blas: missing native BLAS/LAPACK; install them with: sudo apt-get install libopenblas0-pthread libblas3"; \
		echo "      (until then Spark ML uses its Java fallback or OpenBLAS: train_collaborative and make bench-models are slower)"; \
	fi

# The Recommendations page (plugins/recsys_ui.py): its browser test and README screenshot drive Debian's
# headless Chromium through playwright; no browser is ever downloaded.
CHROMIUM ?= /usr/bin/chromium
UI_PORT ?= 8080
.PHONY: browser ui ui-screenshot
test: browser

browser:  ## Debian's chromium + chromium-driver for the browser tests (apt-get when root, else what to install)
	@if [ -x "$(CHROMIUM)" ]; then \
		echo "browser: $(CHROMIUM) present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "browser: $(CHROMIUM) is missing; install it with: sudo apt-get install chromium chromium-driver"; \
		echo "         (the browser test of the Recommendations page is skipped until then)"; \
	fi

ui-screenshot: install browser  ## docs/ui_recommendations.png from the data in $RECSYS_DATA_DIR (run `make demo` first)
	$(BIN)/python -m recsys.ui.screenshot --out docs/ui_recommendations.png

ui: airflow-db  ## the Airflow UI (api-server) with the Recommendations page on $RECSYS_DATA_DIR; Ctrl-C stops it
	@echo "Recommendations page: http://localhost:$(UI_PORT)/plugin/recommendations"
	@echo "log in as admin; the password is in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated (written at first start)"
	$(BIN)/airflow api-server --port $(UI_PORT)
