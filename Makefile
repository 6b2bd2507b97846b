# `make run` and `make test` set up everything they need on a fresh machine (Python 3.10-3.12).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov scans k8s/ and docker/Dockerfile in the tests; its pins clash with the test runner's
# (constraints-checkov.txt says which), so it has a virtual environment of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
IMAGE ?= cnnpipe:latest
ARGS ?=
PYTEST_ARGS ?=
# Much of the suite waits on child processes (pipeline steps, workers, containers), so two test
# processes keep both cores of a 2-core machine busy.
TEST_WORKERS ?= 2
# pytest-xdist's options for TEST_WORKERS processes; none for TEST_WORKERS=0 (this one process).
PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)

.PHONY: run check test image image-local compile clean

# The virtual environment, rebuilt when the dependencies change; constraints.txt pins every
# transitive version the pipeline was tested with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

$(CHECKOV_STAMP): constraints-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r constraints-checkov.txt
	touch $(CHECKOV_STAMP)

## run: the whole pipeline locally on the bundled digits (smoke preset); ARGS='--models lenet5' etc.
run: $(STAMP)
	$(BIN)/cnnpipe run $(ARGS)

## test: the test suite (no GPU or internet needed; the `docker` tests build cnnpipe:local when an engine runs),
## in TEST_WORKERS processes (pytest-xdist; tests/conftest.py groups the tests and hands out the longest first);
## TEST_WORKERS=0 runs it in this one process; the 15 slowest tests are listed at the end
test: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/python -m pytest $(PARALLEL) --durations=15 $(PYTEST_ARGS)

## check: the inner loop, before each commit: lint (ruff, the rules in pyproject.toml) and every test
## not marked slow or docker (the tests a change most likely breaks), in TEST_WORKERS processes
check: $(STAMP)
	$(BIN)/ruff check --quiet .
	$(BIN)/python -m pytest $(PARALLEL) -q -m "not slow and not docker" $(PYTEST_ARGS)

## image: the one container image every step runs in, on TensorFlow's GPU base (needs a Docker
## engine with BuildKit and Docker Hub); the image for the cluster
image:
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile -t $(IMAGE) .

## image-local: cnnpipe:local on a Debian base made here with debootstrap (needs root, debootstrap
## and a Docker engine, no container registry); what `cnnpipe run --runner docker --image cnnpipe:local` runs
image-local:
	docker/build-local.sh cnnpipe:local

## compile: pipeline.yaml for the cluster, steps on the GPU node pool
compile: $(STAMP)
	$(BIN)/cnnpipe compile --output pipeline.yaml --image $(IMAGE)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) runs .pytest_cache .ruff_cache
