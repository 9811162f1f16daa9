//! Where the programs the tests and examples start live (`target/<profile>/…`), and building
//! them when a test binary runs before they exist.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository this crate lives in (`tests/testkit` → the root).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/testkit lies two levels below the repository root")
}

/// `target/<profile>` of the running program: a test binary lives in `target/<profile>/deps/`,
/// an example in `target/<profile>/examples/`, a binary in `target/<profile>/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .expect("the program lives in target/<profile>/…");
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The agent binary of the same profile (`cargo test` and `just demo` build it).
pub fn agent_binary() -> PathBuf {
    profile_dir().join("kijo-agent")
}

/// `cargo build --quiet ARGS` in the repository, in the running program's profile. Cargo's
/// per-test variables are removed: they would change fingerprints and force rebuilds.
pub fn cargo_build(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--quiet"])
        .args(args)
        .current_dir(repo_root());
    for (k, _) in std::env::vars() {
        if (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
            || k == "RUST_RECURSION_COUNT"
        {
            build.env_remove(k);
        }
    }
    if profile_dir().file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    build.status()
}
