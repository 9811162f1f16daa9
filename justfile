# kijo-agent development commands. `just --list` shows them all.

default:
    @just --list

# Everything CI runs: formatting, lints, all tests.
test: lint
    cargo test --all-targets

# Formatting and clippy with warnings as errors, on every target.
lint:
    cargo fmt --all --check
    cargo clippy --all-targets -- -D warnings

# Debug build of the agent.
build:
    cargo build

# Run the agent with any flags, e.g. `just run --once --kubeconfig ~/.kube/config`.
run *ARGS:
    cargo run --quiet -- {{ARGS}}
