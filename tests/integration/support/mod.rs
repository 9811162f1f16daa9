//! Shared harness code for the integration tests.

pub mod agent;
pub mod lifecycle;
pub mod pg;
pub mod receiver;
pub mod sandbox;
pub mod scenario;
