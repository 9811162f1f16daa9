//! The streaming list-page decoder and the parse of each item it hands out, on arbitrary
//! bytes. Besides never panicking: a page the decoder accepts must be one valid JSON object,
//! because an accepted page that was really truncated or corrupt would end a listing early and
//! make the missing reports' findings look fixed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(items) = kijo_agent::fuzz_api::list_page(data) else {
        return;
    };
    // The decoder skips fields it ignores without decoding them: their strings are not checked
    // for UTF-8 or paired surrogates, their numbers not converted. The API server never sends
    // such values, and they change no structure. So the oracle sees invalid UTF-8 replaced, and
    // tolerates only what `Value` cannot represent though JSON's grammar allows it (unpaired
    // surrogate escapes, numbers beyond f64): a truncated page (EOF) or any other syntax error
    // is a failure.
    let text = String::from_utf8_lossy(data);
    let page: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) if !e.is_eof() && is_unrepresentable_value(&e) => return,
        Err(e) => panic!("the decoder accepted a page that is not valid JSON ({e})"),
    };
    assert!(
        page.is_object(),
        "the decoder accepted a page that is not an object"
    );
    // With duplicate "items" keys the decoder delivers every copy and `Value` keeps the last,
    // so only a lower bound holds.
    if let Some(list) = page.get("items").and_then(|v| v.as_array()) {
        assert!(
            items >= list.len() as u64,
            "the decoder delivered {items} items of a page holding {}",
            list.len()
        );
    }
});

fn is_unrepresentable_value(e: &serde_json::Error) -> bool {
    let message = e.to_string();
    [
        "surrogate",
        "unicode code point",
        "escape",
        "number out of range",
    ]
    .iter()
    .any(|m| message.contains(m))
}
