# The two commands of the README: `make book` (build the executed book) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install book test bench bench-kernels bench-cg bench-cnf bench-cnf-chunks

# CPU install path: torch==2.13.0 first (a local CPU wheel); the package's looser torch range is then
# already satisfied, so pip does not pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[book,test]"
	touch $@

install: $(VENV)/.installed

# Executes every chapter from scratch (no cache); a failing cell fails the build. HTML: book/_build/html/
# The build reruns only when one of its inputs (chapters, package, weights, data) changed since the last
# one, so `make test` right after `make book` does not execute the chapters twice. One torch/OpenMP
# thread per process: the chapters' small models lose little with it on an idle machine and do not
# collapse next to a busy core. No per-cell timeout (a slow cell is not a failure); the whole build is
# bounded by `timeout 3600`.
BOOK_INPUTS := $(wildcard book/*.ipynb book/*.md book/*.yml book/*.bib book/*.py book/_ext/*.py) \
               $(shell find opforce_tutorial -name '*.py') $(wildcard models/* data/*.npz data/*.json data/*.pdb)
BOOK_STAMP := book/_build/.built

book: $(BOOK_STAMP)

$(BOOK_STAMP): $(VENV)/.installed $(BOOK_INPUTS)
	rm -rf book/_build
	$(BIN)/python book/widget_js.py
	OMP_NUM_THREADS=1 timeout 3600 $(BIN)/jupyter-book build book -W --keep-going
	touch $@

# Unit and integration tests, then browser tests of the freshly built book.
test: book
	$(BIN)/python -m pytest -ra

bench: install
	$(BIN)/python benchmarks/book_build.py

bench-kernels: install
	$(BIN)/python benchmarks/kernels.py

bench-cg: install
	$(BIN)/python benchmarks/cg_simulation.py

bench-cnf: install
	$(BIN)/python benchmarks/cnf_labels.py

bench-cnf-chunks: install
	$(BIN)/python benchmarks/cnf_chunks.py
