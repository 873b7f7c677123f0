//! A package set as a merged-/usr tree, like debootstrap makes in Debian 12:
//! `/bin`, `/sbin`, `/lib`, `/lib64`, … are links into `/usr`, so the tree's
//! `usr/` can serve as a whole system's `/usr`.
//!
//! Packages still ship some files under `/bin` or `/lib` (dpkg writes them
//! through the links on a real system); they are moved into `usr/` here. A
//! path both places ship must be the same file, or the merge refuses it.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The top-level directories Debian links into `/usr`.
pub const MERGED: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Merges `root`'s top-level directories into `root/usr` and links them.
pub(super) fn merge(root: &Path) -> io::Result<()> {
    for name in MERGED {
        let top = root.join(name);
        let into = root.join("usr").join(name);
        match fs::symlink_metadata(&top) {
            Ok(m) if m.is_dir() => {
                fs::create_dir_all(&into)?;
                move_tree(&top, &into, Path::new("/").join(name).as_path())?;
                fs::remove_dir(&top)?;
            }
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "/{name} is not a directory in the unpacked packages"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if into.is_dir() {
            std::os::unix::fs::symlink(Path::new("usr").join(name), &top)?;
        }
    }
    Ok(())
}

/// Moves the entries of `from` (which was at `/<at>` in the tree) into
/// `into`, merging directories.
fn move_tree(from: &Path, into: &Path, at: &Path) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let dst = into.join(e.file_name());
        let here = at.join(e.file_name());
        let meta = fs::symlink_metadata(&src)?;
        match fs::symlink_metadata(&dst) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if meta.file_type().is_symlink() {
                    // A relative target that climbs out of its directory
                    // meant the old place: keep its meaning as an
                    // absolute path.
                    let target = fs::read_link(&src)?;
                    let target = if target.is_relative()
                        && target.components().any(|c| c == Component::ParentDir)
                    {
                        absolute(&here, &target)
                    } else {
                        target
                    };
                    std::os::unix::fs::symlink(target, &dst)?;
                    fs::remove_file(&src)?;
                } else {
                    fs::rename(&src, &dst)?;
                }
            }
            Err(err) => return Err(err),
            Ok(d) if d.is_dir() && meta.is_dir() => {
                move_tree(&src, &dst, &here)?;
                fs::remove_dir(&src)?;
            }
            Ok(_) if same(&src, &dst)? => {
                if meta.is_dir() {
                    fs::remove_dir_all(&src)?;
                } else {
                    fs::remove_file(&src)?;
                }
            }
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} and /usr{} are both shipped, and differ",
                    here.display(),
                    here.display()
                )))
            }
        }
    }
    Ok(())
}

/// `target` as seen from the link at `link`, made absolute and normal.
fn absolute(link: &Path, target: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    let base = link.parent().unwrap_or(Path::new("/"));
    for c in base.components().chain(target.components()) {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether two entries are the same: equal symlinks, or files with equal
/// content and mode.
fn same(a: &Path, b: &Path) -> io::Result<bool> {
    let (ma, mb) = (fs::symlink_metadata(a)?, fs::symlink_metadata(b)?);
    if ma.file_type().is_symlink() && mb.file_type().is_symlink() {
        return Ok(fs::read_link(a)? == fs::read_link(b)?);
    }
    if ma.is_file() && mb.is_file() {
        use std::os::unix::fs::PermissionsExt;
        return Ok(
            ma.permissions().mode() == mb.permissions().mode() && fs::read(a)? == fs::read(b)?
        );
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_directories_move_into_usr_and_become_links() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).expect("mkdir");
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).expect("mkdir");
        fs::write(root.join("bin/bash"), b"bash").expect("write");
        fs::write(root.join("usr/bin/make"), b"make").expect("write");
        fs::write(root.join("lib/x86_64-linux-gnu/libc.so.6"), b"libc").expect("write");
        std::os::unix::fs::symlink("../usr/bin/make", root.join("bin/gmake")).expect("link");
        merge(root).expect("merge");
        assert_eq!(
            fs::read_link(root.join("bin")).expect("bin"),
            Path::new("usr/bin")
        );
        assert_eq!(fs::read(root.join("usr/bin/bash")).expect("bash"), b"bash");
        assert_eq!(
            fs::read(root.join("usr/lib/x86_64-linux-gnu/libc.so.6")).expect("libc"),
            b"libc"
        );
        assert_eq!(
            fs::read_link(root.join("usr/bin/gmake")).expect("gmake"),
            Path::new("/usr/bin/make")
        );
        assert!(!root.join("sbin").exists());
    }

    #[test]
    fn a_path_shipped_twice_differently_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).expect("mkdir");
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        fs::write(root.join("bin/sh"), b"dash").expect("write");
        fs::write(root.join("usr/bin/sh"), b"bash").expect("write");
        let e = merge(root).expect_err("conflict");
        assert!(e.to_string().contains("/bin/sh and /usr/bin/sh"), "{e}");
    }
}
