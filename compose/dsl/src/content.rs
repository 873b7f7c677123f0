//! Content hashes of recipe files and directories.
//!
//! Keys must not depend on where the checkout is or when files were touched,
//! so a directory hashes as a canonical listing of relative names, kinds,
//! executable bits and contents — never absolute paths, owners or times.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// blake3 of a file's bytes, or of a directory's canonical listing.
pub fn path_blake3(path: &Path) -> io::Result<blake3::Hash> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kiln-dir-v1\0");
        hash_dir(path, Path::new(""), &mut hasher)?;
        Ok(hasher.finalize())
    } else {
        file_blake3(path)
    }
}

/// blake3 of a regular file (following symlinks).
pub fn file_blake3(path: &Path) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let file = fs::File::open(path)?;
    hasher.update_reader(file)?;
    Ok(hasher.finalize())
}

fn hash_dir(dir: &Path, rel: &Path, hasher: &mut blake3::Hasher) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let rel = rel.join(&name);
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        let rel_bytes = rel.as_os_str().as_encoded_bytes();
        if meta.is_dir() {
            hasher.update(b"d\0");
            hasher.update(rel_bytes);
            hasher.update(b"\0");
            hash_dir(&path, &rel, hasher)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            hasher.update(b"l\0");
            hasher.update(rel_bytes);
            hasher.update(b"\0");
            hasher.update(target.as_os_str().as_encoded_bytes());
            hasher.update(b"\0");
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            hasher.update(if exec { b"x\0" } else { b"f\0" });
            hasher.update(rel_bytes);
            hasher.update(b"\0");
            hasher.update(file_blake3(&path)?.as_bytes());
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file, directory or symlink", path.display()),
            ));
        }
    }
    Ok(())
}
