//! Writes an ext4 image of a host directory, optionally timing `mke2fs -d`
//! on the same directory for comparison.
//!
//! ```text
//! cargo run --release -p kiln-ext4 --example mkext4 -- <dir> <image> <size-MiB> [--compare]
//! ```
//!
//! `--compare` also runs `mke2fs -q -t ext4 -d <dir>` into `<image>.mke2fs`
//! at the same size and prints both times: until the tool returns, and the
//! `fsync` of the image after that (both tools leave the data in the page
//! cache). Reading the directory into a tree is timed separately: it is the
//! caller's work, not the writer's.

use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use kiln_ext4::Options;
use kiln_fstree::Tree;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: mkext4 <dir> <image> <size-MiB> [--compare]");
        return ExitCode::from(2);
    }
    let (dir, image) = (Path::new(&args[0]), Path::new(&args[1]));
    let Ok(mib) = args[2].parse::<u64>() else {
        eprintln!("size must be a number of MiB, got `{}`", args[2]);
        return ExitCode::from(2);
    };
    let compare = args.iter().any(|a| a == "--compare");

    let t0 = Instant::now();
    let tree = match Tree::from_dir(dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("reading {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let read_tree = t0.elapsed();
    let mut opts = Options::new(mib << 20);
    opts.label = "kiln".into();
    opts.epoch = 1_700_000_000;
    let t1 = Instant::now();
    let mut our_sync = 0.0;
    let result = File::create(image)
        .map_err(|e| e.to_string())
        .and_then(|mut f| {
            let s = kiln_ext4::write(&tree, &opts, &mut f).map_err(|e| e.to_string())?;
            let t = Instant::now();
            f.sync_all().map_err(|e| e.to_string())?;
            our_sync = t.elapsed().as_secs_f64();
            Ok(s)
        });
    let ours = t1.elapsed().as_secs_f64() - our_sync;
    match result {
        Ok(s) => println!(
            "kiln-ext4: {} entries in {ours:.3}s + {our_sync:.3}s fsync (+{:.3}s reading the tree), uuid {}, {} of {} blocks used, {} MiB written",
            tree.len(),
            read_tree.as_secs_f64(),
            s.uuid_string(),
            s.blocks - s.free_blocks,
            s.blocks,
            s.bytes_written >> 20
        ),
        Err(e) => {
            eprintln!("kiln-ext4: {e}");
            return ExitCode::FAILURE;
        }
    }
    if compare {
        let other = image.with_extension("mke2fs");
        let _ = std::fs::remove_file(&other);
        let t2 = Instant::now();
        let status = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "kiln", "-d"])
            .arg(dir)
            .arg(&other)
            .arg(format!("{mib}M"))
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .status();
        let theirs = t2.elapsed().as_secs_f64();
        let t3 = Instant::now();
        let synced = File::open(&other).and_then(|f| f.sync_all());
        let their_sync = t3.elapsed().as_secs_f64();
        match (status, synced) {
            (Ok(st), Ok(())) if st.success() => println!(
                "mke2fs -d:  {theirs:.3}s + {their_sync:.3}s fsync (kiln-ext4 is {:.1}x {} before fsync)",
                theirs.max(ours) / theirs.min(ours),
                if ours <= theirs { "faster" } else { "slower" }
            ),
            (Ok(st), _) => eprintln!("mke2fs failed: {st}"),
            (Err(e), _) => eprintln!("running mke2fs: {e}"),
        }
    }
    ExitCode::SUCCESS
}
