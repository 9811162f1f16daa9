//! Support shared by the integration tests and the examples (the demo, the benchmarks, the
//! sandbox): each helper exists once here, so a test exercises the same launcher and the same
//! HTTP framing that the demo and the benchmarks run.
//!
//! - [`agent`], [`build`]: the agent binary and where the programs live.
//! - [`sandbox`]: starts the Kubernetes-API sandbox (`examples/sandbox`) and talks to it.
//! - [`http`]: HTTP/1.1 request parsing and response writing for loopback servers.
//! - [`receiver`]: a recording, scripted HTTP receiver on 127.0.0.1 (Slack, webhooks, SaaS).
//! - [`tcp_proxy`]: a loopback TCP proxy that can stop forwarding (a hung server).
//! - [`tempdir`], [`wait`]: temporary directories and waiting for a condition.

pub mod agent;
pub mod build;
pub mod http;
pub mod receiver;
pub mod sandbox;
pub mod tcp_proxy;
pub mod tempdir;
pub mod wait;
