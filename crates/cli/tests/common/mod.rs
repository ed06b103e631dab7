//! Running the `zhbert` binary from the CLI's test crates.

use std::process::{Command, Output};

/// Runs zhbert with `args` (warnings and errors only on stderr).
pub fn zhbert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zhbert"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs zhbert and fails the test, with its stderr, unless it succeeds.
pub fn zhbert_ok(args: &[&str]) -> Output {
    let run = zhbert(args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run
}
