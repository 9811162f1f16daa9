# kijo-agent development commands. `just --list` shows them all.

default:
    @just --list

# Static musl release binary as Dockerfile.scratch ships it, and its size (tools: .ci/install-tools).
build-static:
    cargo build --release --locked --target x86_64-unknown-linux-musl
    @stat -c '%s' target/x86_64-unknown-linux-musl/release/kijo-agent | awk '{ printf "target/x86_64-unknown-linux-musl/release/kijo-agent: %d bytes (%.2f MiB)\n", $1, $1 / 1048576 }'

# The static binary in an empty root as 65534:65534 (as root): `--full` adds the sandbox checks.
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
