# The two commands of the README: `make book` (build the executed book) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install book test bench bench-kernels bench-cg bench-cnf

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
book: install
	rm -rf book/_build
	$(BIN)/python book/widget_js.py
	timeout 3600 $(BIN)/jupyter-book build book -W --keep-going

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
