//! The report parser on arbitrary bytes, as each report kind: a report object comes from
//! whoever can write the CRD (and its strings from whoever builds the image), so no input may
//! panic or hang the poll loop; an unusable one must come back as `Malformed`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The API server sends UTF-8 JSON; the client rejects anything else before parsing.
    if let Ok(json) = std::str::from_utf8(data) {
        kijo_agent::fuzz_api::report(json);
    }
});
