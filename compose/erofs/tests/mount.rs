//! The real check: the running kernel mounts Kiln's images and shows exactly
//! the input tree, xattrs and hard links included. Needs root and loop
//! devices; where a loop mount is not possible the test says why and skips.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{compare_host_dir, rich_tree, write_image};
use kiln_erofs::{Compression, Options};
use kiln_fstree::Tree;

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount(image: &Path, at: &Path) -> Result<Mounted, String> {
    let out = Command::new("mount")
        .args(["-t", "erofs", "-o", "loop,ro"])
        .arg(image)
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(Mounted(at.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Every xattr of a path, through the kernel.
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: `c` is NUL-terminated and `names` is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: both strings are NUL-terminated; `value` is writable.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0, "lgetxattr {} {:?}", path.display(), cname);
        value.truncate(len as usize);
        out.insert(String::from_utf8(name.to_vec()).unwrap(), value);
    }
    out
}

fn check_mounted(tree: &Tree, compression: Compression, tail_packing: bool) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        compression,
        epoch: 1_234_567_890,
        tail_packing,
        ..Options::default()
    };
    let (image, _) = write_image(dir.path(), "m.img", tree, &opts);
    let at = dir.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    let _mounted = match mount(&image, &at) {
        Ok(m) => m,
        Err(why) => {
            return kiln_testkit::skip(
                "erofs kernel mount",
                &format!("cannot loop-mount an EROFS image here: {why}"),
                kiln_testkit::Cannot::Machine,
            );
        }
    };
    compare_host_dir(tree, &at, false);
    for (path, node) in tree.iter() {
        let (_, node) = match node.kind {
            kiln_fstree::Kind::Hardlink(_) => common::resolve(tree, path),
            _ => (path, node),
        };
        let host = at.join(path.trim_start_matches('/'));
        // Kernels hide some xattrs (ACLs are served from their own cache),
        // but everything listed must be ours, and all of ours listed.
        let got = xattrs(&host);
        assert_eq!(got, node.xattrs, "{path}: xattrs");
        let meta = std::fs::symlink_metadata(&host).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mtime(), 1_234_567_890, "{path}: mtime");
    }
}

#[test]
fn kernel_reads_uncompressed_image() {
    check_mounted(&rich_tree(), Compression::None, true);
}

#[test]
fn kernel_reads_lz4_image() {
    check_mounted(&rich_tree(), Compression::Lz4, true);
}

#[test]
fn kernel_reads_lz4hc_image() {
    check_mounted(&rich_tree(), Compression::Lz4hc { level: 9 }, true);
}

#[test]
fn kernel_reads_lz4hc_image_without_tail_packing() {
    check_mounted(&rich_tree(), Compression::Lz4hc { level: 12 }, false);
}
