//! The sandbox launcher and client live in the shared test kit (`tests/testkit`), which the
//! demo and the benchmarks use too; this module keeps the test modules' import paths.

pub use kijo_testkit::sandbox::{Sandbox, TempDir};
