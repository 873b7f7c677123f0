//! Fingerprints the code that turns package outputs into a disk image.
//!
//! The image node's key must change whenever the bytes it would write can
//! change. Those bytes depend on the image writers' source (and the exact
//! versions of the crates they use), not on where the checkout is, so the
//! fingerprint is a blake3 over exactly those files, by relative path.

use std::path::{Path, PathBuf};

/// What the image bytes depend on, relative to the workspace root.
const INPUTS: &[&str] = &[
    "compose/src/image.rs",
    "compose/src/image",
    "compose/fstree",
    "compose/erofs",
    "compose/ext4",
    "compose/rootfs",
    "compose/disk",
    "Cargo.lock",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.parent().expect("compose/ is inside the workspace");
    let mut files = Vec::new();
    for rel in INPUTS {
        let path = root.join(rel);
        println!("cargo:rerun-if-changed={}", path.display());
        collect(&path, &mut files);
    }
    files.sort();
    let mut h = blake3::Hasher::new();
    for f in &files {
        let rel = f.strip_prefix(root).unwrap_or(f);
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        h.update(rel.to_string_lossy().as_bytes());
        h.update(&[0]);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    println!(
        "cargo:rustc-env=KILN_IMAGE_WRITERS={}",
        h.finalize().to_hex()
    );
}

/// Source files below `path` (tests and build output excluded: they don't
/// change what is written).
fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "tests" || name == "target" || name == "examples" || name == "benches" {
            continue;
        }
        collect(&p, out);
    }
}
