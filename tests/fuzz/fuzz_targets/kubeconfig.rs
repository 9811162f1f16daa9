//! Kubeconfig loading on arbitrary bytes: the file is written where `--kubeconfig` would read
//! it and loaded as at start-up (YAML parse, merge, context resolution, CA and client-key
//! checks). Any outcome but a panic or a hang is fine: a bad kubeconfig must end in an error
//! that names the file, so the agent exits 2 instead of crashing.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One file per fuzzing process (`-jobs`/`-fork` run several), under the system temp dir.
/// Relative certificate, key and token paths in the input resolve next to it.
fn kubeconfig_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kijo-fuzz-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzzing temp dir");
        dir.join("config")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = kubeconfig_path();
    std::fs::write(path, data).expect("write the kubeconfig under test");
    let _ = kijo_agent::fuzz_api::kubeconfig(path);
});
