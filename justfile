# kijo-agent development commands. `just --list` shows them all.

default:
    @just --list

# Start the Kubernetes-API sandbox (see README "Kubernetes API sandbox")
sandbox *ARGS:
    cargo run --quiet --example sandbox -- {{ARGS}}

# List `--synthetic 3000:150` with the agent's client and with kubectl; print wall time and peak RSS
bench-list *ARGS:
    cargo build --release --example sandbox --example bench_list
    target/release/examples/bench_list {{ARGS}}
