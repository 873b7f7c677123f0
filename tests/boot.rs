//! CI's boot test: the tiny board, built from source (kernel, U-Boot,
//! busybox, glibc from the sysroot recipe), boots from its disk image
//! alone in QEMU (TCG), and rolls back from a failed root B to root A.
//! `scripts/e2e-boot` does the work and explains any failure; the big
//! boards run the same script by hand (see the README).

mod common;

use std::process::Command;

use common::*;

#[test]
fn tiny_board_boots_from_its_disk_and_rolls_back() {
    let o = Command::new(repo().join("scripts/e2e-boot"))
        .args(["qemu-x86_64-tiny", "--ab"])
        // the shared test store, so the packages built by the other tests are reused
        .env("KILN_STORE", repo().join("target/kiln-test-store"))
        .env("CI", "1")
        .output()
        .expect("run scripts/e2e-boot");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{text}");
    assert!(o.status.success(), "e2e-boot failed:\n{text}");
    assert!(text.contains("e2e-boot qemu-x86_64-tiny: passed"), "{text}");
}
