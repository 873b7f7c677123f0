//! What Kiln's tests share across crates.

use std::io::Write;

/// Why a test cannot run here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cannot {
    /// A limit of the machine itself that no setup can lift there: no loop
    /// devices or no root in a container. Allowed in CI.
    Machine,
    /// Something `scripts/setup` installs is missing. A failure in CI.
    Setup,
}

/// Skips the calling test, saying why. `cargo test` hides what a passing
/// test prints, so a skip must not look like a pass:
///
/// - the line `<test>: <reason>` is appended to the file `$KILN_SKIPS`,
///   which `scripts/test` lists at the end of the run;
/// - under `CI=true` (or `CI=1`), a skip for [`Cannot::Setup`] panics.
pub fn skip(test: &str, reason: &str, why: Cannot) {
    let line = format!("{test}: {reason}");
    println!("SKIPPED: {line}");
    if let Some(path) = std::env::var_os("KILN_SKIPS") {
        // One write of one line to an O_APPEND file: parallel tests don't
        // mix their lines.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            panic!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci && why == Cannot::Setup {
        panic!("skipped in CI, where scripts/setup should have made this possible: {line}");
    }
}
