//! Helpers shared by the integration tests: running the host tools that
//! check our output independently (sfdisk, fsck.vfat, mtools, zstd).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// Runs a command; panics with its output unless it exits 0.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout + &stderr
}

/// One partition line of `sfdisk -d`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub start: u64,
    pub size: u64,
    pub ptype: String,
    pub bootable: bool,
    pub uuid: Option<String>,
    pub name: Option<String>,
    pub attrs: Option<String>,
}

/// `sfdisk -d` parsed into its header fields and partition lines (by
/// partition number). Panics if sfdisk warns about anything.
pub fn sfdisk(image: &Path) -> (BTreeMap<String, String>, BTreeMap<u32, Entry>) {
    let path = image.to_str().unwrap();
    let out = Command::new("sfdisk").args(["-d", path]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "sfdisk: {stderr}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut header = BTreeMap::new();
    let mut parts = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some((dev, rest)) = line.split_once(" : ") {
            let number: u32 = dev.trim().strip_prefix(path).unwrap().parse().unwrap();
            let mut e = Entry::default();
            for field in rest.split(", ") {
                match field.split_once('=') {
                    Some((k, v)) => {
                        let v = v.trim().trim_matches('"').to_string();
                        match k.trim() {
                            "start" => e.start = v.parse().unwrap(),
                            "size" => e.size = v.parse().unwrap(),
                            "type" => e.ptype = v,
                            "uuid" => e.uuid = Some(v),
                            "name" => e.name = Some(v),
                            "attrs" => e.attrs = Some(v),
                            other => panic!("unexpected sfdisk field {other}"),
                        }
                    }
                    None if field.trim() == "bootable" => e.bootable = true,
                    None => panic!("unexpected sfdisk flag {field}"),
                }
            }
            parts.insert(number, e);
        } else if let Some((k, v)) = line.split_once(": ") {
            header.insert(k.to_string(), v.to_string());
        }
    }
    (header, parts)
}

pub fn entry(start: u64, size: u64, ptype: &str, bootable: bool) -> Entry {
    Entry {
        start,
        size,
        ptype: ptype.into(),
        bootable,
        ..Entry::default()
    }
}

/// `len` bytes of `path` from `offset`.
pub fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A sparse file of `len` bytes.
pub fn sparse_file(path: &Path, len: u64) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(len).unwrap();
    f
}

/// The balenaOS sizes (the image's policy) as a fixture: 4 MiB gap and
/// alignment, boot 40 MiB, roots 320 MiB, state 20 MiB, data 192 MiB.
pub fn balena_spec(table: kiln_disk::TableKind) -> kiln_disk::LayoutSpec {
    use kiln_disk::MIB;
    kiln_disk::LayoutSpec {
        table,
        gap_bytes: 4 * MIB,
        alignment_bytes: 4 * MIB,
        boot_bytes: 40 * MIB,
        root_bytes: 320 * MIB,
        state_bytes: 20 * MIB,
        data_bytes: 192 * MIB,
        disk_bytes: None,
        boot_fat: None,
    }
}
