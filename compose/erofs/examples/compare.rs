//! Compares Kiln's EROFS writer with `mkfs.erofs` on a host directory:
//! image sizes and wall times for each compression mode, and a
//! `fsck.erofs` check of every Kiln image.
//!
//! ```text
//! cargo run --release -p kiln-erofs --example compare -- /usr/share/doc
//! ```

use std::error::Error;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln_erofs::{Compression, Options};
use kiln_fstree::Tree;

struct Mode {
    name: &'static str,
    kiln: Option<Options>,
    mkfs: Option<&'static [&'static str]>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let src = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/usr/share/doc".into()),
    );
    let work = tempfile::tempdir()?;
    let t = Instant::now();
    let tree = Tree::from_dir(&src)?;
    println!(
        "{}: {} paths, read in {:.2?}",
        src.display(),
        tree.len(),
        t.elapsed()
    );

    let kiln = |compression, tail_packing| {
        Some(Options {
            compression,
            tail_packing,
            ..Options::default()
        })
    };
    let modes = [
        Mode {
            name: "uncompressed",
            kiln: kiln(Compression::None, true),
            mkfs: Some(&[]),
        },
        Mode {
            name: "lz4",
            kiln: kiln(Compression::Lz4, true),
            mkfs: Some(&["-zlz4"]),
        },
        Mode {
            name: "lz4hc (9)",
            kiln: kiln(Compression::Lz4hc { level: 9 }, true),
            mkfs: Some(&["-zlz4hc"]),
        },
        Mode {
            name: "lz4hc (9), no tail packing",
            kiln: kiln(Compression::Lz4hc { level: 9 }, false),
            mkfs: None,
        },
        Mode {
            name: "lz4hc (9), mkfs -Eztailpacking",
            kiln: None,
            mkfs: Some(&["-zlz4hc", "-Eztailpacking"]),
        },
        Mode {
            name: "lz4hc (12)",
            kiln: kiln(Compression::Lz4hc { level: 12 }, true),
            mkfs: Some(&["-zlz4hc,12"]),
        },
    ];
    println!(
        "{:<32} {:>14} {:>9}   {:>14} {:>9}",
        "mode", "kiln bytes", "time", "mkfs bytes", "time"
    );
    for (i, mode) in modes.iter().enumerate() {
        let mut line = format!("{:<32}", mode.name);
        match &mode.kiln {
            Some(opts) => {
                let path = work.path().join(format!("kiln{i}.img"));
                let t = Instant::now();
                let summary = kiln_erofs::write(&tree, opts, &mut File::create(&path)?)?;
                let elapsed = t.elapsed();
                fsck(&path)?;
                line += &format!(" {:>14} {:>8.2?}", summary.bytes, elapsed);
            }
            None => line += &format!(" {:>14} {:>9}", "-", "-"),
        }
        match mode.mkfs {
            Some(args) => {
                let path = work.path().join(format!("mkfs{i}.img"));
                let t = Instant::now();
                let out = Command::new("mkfs.erofs")
                    .args(["-T0", "--quiet"])
                    .args(args)
                    .arg(&path)
                    .arg(&src)
                    .output()?;
                let elapsed = t.elapsed();
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into());
                }
                line += &format!("   {:>14} {:>8.2?}", fs::metadata(&path)?.len(), elapsed);
            }
            None => line += &format!("   {:>14} {:>9}", "-", "-"),
        }
        println!("{line}");
    }
    Ok(())
}

fn fsck(image: &Path) -> Result<(), Box<dyn Error>> {
    let out = Command::new("fsck.erofs").arg(image).output()?;
    if !out.status.success() {
        return Err(format!(
            "fsck.erofs {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}
