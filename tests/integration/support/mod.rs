//! Shared test harness; one file per area.

pub mod receiver;
