# kijo-agent development commands. `just --list` shows them all.

default:
    @just --list

# Start the Kubernetes-API sandbox (see README "Kubernetes API sandbox")
sandbox *ARGS:
    cargo run --quiet --example sandbox -- {{ARGS}}
