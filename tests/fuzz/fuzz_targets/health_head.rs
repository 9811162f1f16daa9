//! The health server's request-head parsing and routing on arbitrary bytes. Besides never
//! panicking: the server reads a head in whatever pieces the socket delivers and decides at the
//! first prefix that is not "incomplete", so every prefix must be either incomplete or decided
//! the same way as the whole input. Otherwise a probe would be answered differently depending on
//! how its bytes happened to be split into TCP segments.
#![no_main]

use kijo_agent::fuzz_api::{HeadOutcome, health_head};
use libfuzzer_sys::fuzz_target;

/// Prefixes checked per input: every one up to this length, then only those that end at a
/// byte httparse treats as a boundary (space, CR, LF, colon), so long inputs stay fast.
const EVERY_PREFIX_UP_TO: usize = 256;
const MAX_BOUNDARY_PREFIXES: usize = 128;

fuzz_target!(|data: &[u8]| {
    let whole = health_head(data);
    let boundaries = (EVERY_PREFIX_UP_TO + 1..data.len())
        .filter(|&n| matches!(data[n - 1], b' ' | b'\r' | b'\n' | b':'))
        .take(MAX_BOUNDARY_PREFIXES);
    for n in (1..=data.len().min(EVERY_PREFIX_UP_TO)).chain(boundaries) {
        let prefix = health_head(&data[..n]);
        match prefix {
            HeadOutcome::Incomplete => {}
            decided => {
                assert_eq!(
                    decided,
                    whole,
                    "the first {n} bytes are decided differently from all {} bytes",
                    data.len()
                );
                break;
            }
        }
    }
});
