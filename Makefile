# The two set-up commands (see README):  make demo   |   make test
.PHONY: demo test bootstrap-demo bootstrap-test lint bench

SAMPLE_DIR ?= .cache/sample-dataset

demo: bootstrap-demo
	.venv/bin/python examples/train_loop.py --make-sample $(SAMPLE_DIR)

test: bootstrap-test
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q

bootstrap-demo:
	bash scripts/bootstrap.sh demo

bootstrap-test:
	bash scripts/bootstrap.sh test

bench: bootstrap-test
	.venv/bin/python -m benchmarks all
