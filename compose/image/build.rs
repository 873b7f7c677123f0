//! Bakes the image writers' fingerprint into the crate (`KILN_IMAGE_WRITERS`):
//! see `fingerprint.rs` for what it covers and why.

#[path = "fingerprint.rs"]
mod fingerprint;

use std::path::PathBuf;

fn main() -> Result<(), String> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    // compose/image is two levels below the workspace root.
    let root = manifest
        .ancestors()
        .nth(2)
        .ok_or("compose/image is inside the workspace")?
        .to_path_buf();
    let package = std::env::var("CARGO_PKG_NAME").map_err(|e| e.to_string())?;
    let fp = fingerprint::fingerprint(&root, &package)?;
    for f in &fp.files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // Cargo.toml files decide the closure itself.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    println!("cargo:rustc-env=KILN_IMAGE_WRITERS={}", fp.hex);
    Ok(())
}
