# kijo-agent development commands. `.ci/dev --list` shows them all; `.ci/dev RECIPE` installs
# what the recipes need (just included) into target/tools/ and runs `just RECIPE`.

default:
    @just --list

# Everything the suite checks: formatting, lints, all tests, deployment validation, the static binary in an empty root.
test: install-deploy-tools lint
    cargo build --example sandbox
    cargo test --all-targets
    just validate-deploy
    just static-binary-test --full

# CI's checks beside the suite (.ci/run runs them): rustdoc with warnings as errors, the declared rust-version, dependency policy (cargo deny).
ci-checks:
    .ci/install-rust-tools
    .ci/check-docs
    .ci/check-msrv
    .ci/check-deny

# Formatting and clippy with warnings as errors (and std APIs newer than rust-version denied), on every target of the workspace; no dead code in the binary's view.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings -D clippy::incompatible_msrv
    .ci/check-dead-code

# Debug build of the agent.
build:
    cargo build

# Run the agent with any flags, e.g. `just run --once --kubeconfig ~/.kube/config`.
run *ARGS:
    cargo run --quiet -- {{ARGS}}

# Start the Kubernetes-API sandbox (see docs/sandbox.md)
sandbox *ARGS:
    cargo run --quiet --example sandbox -- {{ARGS}}

# List `--synthetic 3000:150` with the agent's client and with kubectl; print wall time and peak RSS
bench-list *ARGS:
    cargo build --release --example sandbox --example bench_list
    target/release/examples/bench_list {{ARGS}}

# Static musl release binary as Dockerfile.scratch ships it, with its dependency list embedded (cargo auditable), and its size (tools: .ci/install-tools).
build-static:
    cargo auditable build --release --locked --target x86_64-unknown-linux-musl
    @stat -c '%s' target/x86_64-unknown-linux-musl/release/kijo-agent | awk '{ printf "target/x86_64-unknown-linux-musl/release/kijo-agent: %d bytes (%.2f MiB)\n", $1, $1 / 1048576 }'

# CycloneDX SBOM of the image (the static binary's Rust dependencies, from its embedded audit data), validated: target/sbom/kijo-agent.cdx.json
sbom *ARGS:
    .ci/sbom {{ARGS}}

# The static binary in an empty root as 65534:65534 (a user namespace when not root): `--full` adds the sandbox checks.
static-binary-test *ARGS:
    .ci/static-binary-test {{ARGS}}

# Kustomize base and overlays, Helm chart: render, schemas, RBAC, hardening; hadolint.
validate-deploy:
    .ci/validate-deploy

# Rewrite deploy/kubernetes/deployment.yaml after editing deploy/kubernetes/base/.
render-manifests:
    .ci/render-manifests

# Tools for the three recipes above (idempotent).
install-deploy-tools:
    .ci/install-tools

# First sync of `--synthetic 3000:150` into a fresh PostgreSQL database, then a no-change cycle; prints wall time, peak RSS, rows written
bench-lifecycle *ARGS:
    cargo build --release --bin kijo-agent --example sandbox --example bench_lifecycle
    target/release/examples/bench_lifecycle {{ARGS}}

# Local demo: sandbox cluster, agent on the embedded store, Slack/webhook messages in the terminal
demo:
    cargo build --quiet --bin kijo-agent --example sandbox --example demo
    target/debug/examples/demo

# cargo-fuzz targets (tests/fuzz) for SECONDS each, default 30; e.g. `just fuzz 600` or `just fuzz 60 report`
fuzz *ARGS:
    .ci/fuzz {{ARGS}}
