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

# Start the Kubernetes-API sandbox (see README "Kubernetes API sandbox")
sandbox *ARGS:
    cargo run --quiet --example sandbox -- {{ARGS}}

# List `--synthetic 3000:150` with the agent's client and with kubectl; print wall time and peak RSS
bench-list *ARGS:
    cargo build --release --example sandbox --example bench_list
    target/release/examples/bench_list {{ARGS}}

# Local demo: sandbox cluster, agent on the embedded store, Slack/webhook messages in the terminal
demo:
    cargo build --quiet --bin kijo-agent --example sandbox --example demo
    target/debug/examples/demo
