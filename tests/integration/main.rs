//! One integration-test binary (ripgrep's layout): each module covers one area against real
//! servers — the agent binary, PostgreSQL on loopback, the Kubernetes-API sandbox, webhook
//! receivers.

mod crash;
mod demo;
mod docs_links;
mod health;
mod hung_store;
mod kube;
mod leader;
mod lifecycle_e2e;
mod logging;
mod notify;
mod notify_e2e;
mod observability;
mod outbox;
mod sandbox;
mod scenarios;
mod secrets;
mod shell;
mod store;
mod support;
mod upgrade;
