//! The kernel mounts the image read-write, sees the tree (including
//! xattrs, ACLs and capabilities through its own xattr code), and after
//! changes and a clean unmount e2fsck still finds nothing.
//!
//! Needs root and loop devices; without them the test prints why and
//! passes without checking (e2fsck coverage is in the other tests).

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use kiln_ext4::Options;
use kiln_fstree::{Data, Kind, Node, Tree};

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid NUL-terminated strings and a buffer of the given size.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

#[test]
fn kernel_mounts_read_write() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return kiln_testkit::skip(
            "kernel_mounts_read_write",
            "loop-mounting needs root",
            kiln_testkit::Cannot::Machine,
        );
    }
    let mut t = Tree::new();
    t.mkdir_p("/srv/data").unwrap();
    let mut ping = Node::file(Data::Bytes(b"ping".to_vec()), 0o755);
    ping.xattrs
        .insert("security.capability".into(), capability(13));
    ping.xattrs.insert("user.big".into(), noise(1, 2000));
    t.insert("/srv/ping", ping).unwrap();
    let mut shared = node(Kind::Dir, 0o2770, 100_000, 100_001);
    shared
        .xattrs
        .insert("system.posix_acl_access".into(), acl(1234));
    t.insert("/srv/shared", shared).unwrap();
    t.insert(
        "/srv/sudo",
        node(Kind::File(Data::Bytes(b"su".to_vec())), 0o4755, 0, 0),
    )
    .unwrap();
    let mut holes = vec![0u8; 200 * 4096];
    for b in (0..200).step_by(2) {
        holes[b * 4096 + 7] = b as u8 + 1;
    }
    file(&mut t, "/srv/holes", holes.clone(), 0o644);
    t.insert("/srv/long-link", Node::symlink("t".repeat(300)))
        .unwrap();
    // Indexed directories, one and two levels: the kernel must find every
    // name through the hash index.
    t.insert("/srv/idx1", Node::dir(0o755)).unwrap();
    for i in 0..3000 {
        let name = format!("/srv/idx1/lib{i}.so");
        file(&mut t, &name, i.to_string().into_bytes(), 0o644);
    }
    t.insert("/srv/idx2", Node::dir(0o755)).unwrap();
    for i in 0..8000 {
        file(&mut t, &format!("/srv/idx2/{i:0>250}"), Vec::new(), 0o644);
    }

    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(64 * MIB);
    opts.inode_ratio = 4096;
    let (image, summary) = write_image(dir.path(), "m.img", &t, &opts);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&image)
        .arg(&mnt)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return kiln_testkit::skip(
                "kernel_mounts_read_write",
                &format!(
                    "mount -o loop failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                kiln_testkit::Cannot::Machine,
            );
        }
        Err(e) => {
            return kiln_testkit::skip(
                "kernel_mounts_read_write",
                &format!("cannot run mount: {e}"),
                kiln_testkit::Cannot::Setup,
            );
        }
    }
    let guard = Mounted(mnt.clone());

    // The kernel's view of what was written.
    assert_eq!(std::fs::read(mnt.join("srv/holes")).unwrap(), holes);
    assert_eq!(
        getxattr(&mnt.join("srv/ping"), "security.capability"),
        Some(capability(13))
    );
    assert_eq!(
        getxattr(&mnt.join("srv/ping"), "user.big"),
        Some(noise(1, 2000))
    );
    assert_eq!(
        getxattr(&mnt.join("srv/shared"), "system.posix_acl_access"),
        Some(acl(1234))
    );
    let m = std::fs::metadata(mnt.join("srv/shared")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid()),
        (0o2770, 100_000, 100_001)
    );
    assert_eq!(
        std::fs::metadata(mnt.join("srv/sudo")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_link(mnt.join("srv/long-link"))
            .unwrap()
            .as_os_str()
            .len(),
        300
    );
    let missing: Vec<String> = (0..3000)
        .map(|i| format!("srv/idx1/lib{i}.so"))
        .chain((0..8000).map(|i| format!("srv/idx2/{i:0>250}")))
        .filter(|p| std::fs::symlink_metadata(mnt.join(p)).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} names not found by the kernel, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    for i in 0..3000 {
        let p = mnt.join(format!("srv/idx1/lib{i}.so"));
        assert_eq!(
            std::fs::read(&p).unwrap(),
            i.to_string().into_bytes(),
            "{}",
            p.display()
        );
    }
    assert!(std::fs::symlink_metadata(mnt.join("srv/idx1/absent")).is_err());
    assert_eq!(
        std::fs::read_dir(mnt.join("srv/idx2")).unwrap().count(),
        8000
    );
    let st = nix_statvfs(&mnt);
    assert_eq!(st, summary.free_blocks, "statfs free blocks");

    // Changes: new files (also into the indexed directories, splitting
    // full leaves), a directory big enough for the kernel to index, a
    // rewrite, a delete.
    for i in 0..500 {
        std::fs::write(mnt.join(format!("srv/idx1/new-{i}")), b"n").unwrap();
        std::fs::write(mnt.join(format!("srv/idx2/new-{i}")), b"n").unwrap();
    }
    for i in (0..3000).step_by(3) {
        std::fs::remove_file(mnt.join(format!("srv/idx1/lib{i}.so"))).unwrap();
    }
    std::fs::write(mnt.join("srv/data/new"), noise(7, 300_000)).unwrap();
    std::fs::create_dir(mnt.join("srv/data/many")).unwrap();
    for i in 0..500 {
        std::fs::write(
            mnt.join(format!("srv/data/many/file-with-a-long-name-{i}")),
            b"x",
        )
        .unwrap();
    }
    std::fs::write(mnt.join("srv/holes"), b"rewritten").unwrap();
    std::fs::remove_file(mnt.join("srv/sudo")).unwrap();
    drop(guard);
    fsck(&image);
    let s = stat_all(&image, &["/srv/data/many", "/srv/holes"]);
    assert_eq!(
        s["/srv/data/many"].flags & 0x1000,
        0x1000,
        "the kernel indexed the new directory (htree)"
    );
    assert_eq!(s["/srv/holes"].size, 9);
}

fn nix_statvfs(path: &Path) -> u64 {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs writes into the zeroed struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path string and struct pointer.
    assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut st) }, 0);
    st.f_bfree as u64
}
