//! The loopback HTTP receiver lives in the shared test kit (`tests/testkit`), which the demo
//! uses too; this module keeps the test modules' import paths.

use std::time::Duration;

pub use kijo_testkit::receiver::{Receiver, Recorded, Reply};

/// Polls `condition` until it holds; panics with `what` after `timeout`. (Argument order of the
/// notification tests; the kit's `wait_until` takes `what` first.)
pub fn wait_until(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    kijo_testkit::wait::wait_until(what, timeout, condition);
}
