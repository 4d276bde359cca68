# Task runner for Airlock. `make run` starts Airlock on the embedded SQLite default;
# `make test` runs every test (see scripts/test); `make fuzz` runs each fuzz target for a minute.
.PHONY: run test lint fmt venv deny fuzz

run:
	cargo run --release -p airlock -- serve

test:
	scripts/test $(ARGS)

fuzz:
	scripts/fuzz $(ARGS)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

venv:
	scripts/python-env

deny:
	cargo deny check
