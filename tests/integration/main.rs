//! One integration-test binary (ripgrep's layout): each module covers one area against real
//! servers — the agent binary, PostgreSQL on loopback, the Kubernetes-API sandbox, webhook
//! receivers.

mod crash;
mod docs_links;
mod kube;
mod leader;
mod lifecycle_e2e;
mod notify;
mod notify_e2e;
mod outbox;
mod sandbox;
mod shell;
mod store;
mod support;
