//! Helpers shared by the integration tests: writing images, and checking
//! them with e2fsprogs (e2fsck, debugfs), which are the reference for what
//! a valid ext4 is. e2fsprogs is required (it is `Priority: required` on
//! Debian); a missing e2fsck fails the tests rather than skipping them.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_ext4::{Options, Summary};
use kiln_fstree::{Data, Kind, Node, Tree};

pub const MIB: u64 = 1 << 20;

/// Writes `tree` to `dir/name` and returns the path and summary.
pub fn write_image(dir: &Path, name: &str, tree: &Tree, opts: &Options) -> (PathBuf, Summary) {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    let summary =
        kiln_ext4::write(tree, opts, &mut f).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    assert_eq!(
        f.metadata().unwrap().len(),
        opts.size_bytes,
        "image is the partition size"
    );
    (path, summary)
}

/// Runs `e2fsck -fn` and fails unless it exits 0 and prints nothing but
/// its banner, the pass headers and the summary line.
pub fn fsck(image: &Path) {
    fsck_at(image, None)
}

/// [`fsck`] with e2fsck's clock set to `now` (`E2FSCK_TIME`).
pub fn fsck_at(image: &Path, now: Option<u64>) {
    let mut cmd = Command::new("e2fsck");
    cmd.arg("-fn").arg(image);
    if let Some(now) = now {
        cmd.env("E2FSCK_TIME", now.to_string());
    }
    let out = cmd
        .output()
        .expect("e2fsck (e2fsprogs) must be installed to run these tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unexpected: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("Pass ") && !l.contains(" files (") && !l.trim().is_empty())
        .chain(stderr.lines().filter(|l| !l.starts_with("e2fsck ")))
        .collect();
    assert!(
        out.status.success() && unexpected.is_empty(),
        "e2fsck -fn {} exited {:?}:\n{stdout}\n{stderr}",
        image.display(),
        out.status.code()
    );
}

/// Runs debugfs commands (one process, `-f`) and returns stdout+stderr.
pub fn debugfs(image: &Path, cmds: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cmds");
    std::fs::write(&script, cmds.join("\n") + "\n").unwrap();
    let out = Command::new("debugfs")
        .arg("-f")
        .arg(&script)
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) must be installed");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// What `debugfs stat` says about an inode.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: u32,
    pub kind: String,
    pub mode: u16,
    pub flags: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    pub blockcount: u64,
    pub file_acl: u64,
    pub device: Option<(u32, u32)>,
    pub fast_link: Option<String>,
    pub extents: String,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()
}

fn num<T: std::str::FromStr>(line: &str, key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let s = field(line, key).unwrap_or_else(|| panic!("no `{key}` in `{line}`"));
    s.parse()
        .unwrap_or_else(|e| panic!("`{key}` in `{line}`: {e:?}"))
}

/// `stat` for every path, in one debugfs run. Paths must not contain
/// whitespace or quotes (debugfs's parser is simple).
pub fn stat_all(image: &Path, paths: &[&str]) -> HashMap<String, Stat> {
    let cmds: Vec<String> = paths.iter().map(|p| format!("stat {p}")).collect();
    let out = debugfs(image, &cmds);
    let mut result = HashMap::new();
    let mut current: Option<(String, Stat)> = None;
    let mut in_extents = false;
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("debugfs: stat ") {
            if let Some((p, s)) = current.take() {
                result.insert(p, s);
            }
            current = Some((p.to_string(), Stat::default()));
            in_extents = false;
            continue;
        }
        let Some((_, s)) = current.as_mut() else {
            continue;
        };
        if line.starts_with("Inode: ") {
            s.ino = num(line, "Inode:");
            let t = &line[line.find("Type:").unwrap() + 5..line.find("Mode:").unwrap()];
            s.kind = t.trim().to_string();
            s.mode = u16::from_str_radix(field(line, "Mode:").unwrap(), 8).unwrap();
            s.flags =
                u32::from_str_radix(field(line, "Flags:").unwrap().trim_start_matches("0x"), 16)
                    .unwrap();
        } else if line.starts_with("User:") {
            s.uid = num(line, "User:");
            s.gid = num(line, "Group:");
            s.size = num(line, "Size:");
        } else if line.starts_with("File ACL:") {
            s.file_acl = num(line, "File ACL:");
        } else if line.starts_with("Links:") {
            s.links = num(line, "Links:");
            s.blockcount = num(line, "Blockcount:");
        } else if line.contains("Device major/minor number:") {
            let mm = field(line, "number:").unwrap();
            let (a, b) = mm.split_once(':').unwrap();
            s.device = Some((a.parse().unwrap(), b.parse().unwrap()));
        } else if let Some(rest) = line.strip_prefix("Fast link dest: ") {
            s.fast_link = Some(rest.trim_matches('"').to_string());
        } else if line == "EXTENTS:" {
            in_extents = true;
        } else if in_extents {
            s.extents.push_str(line);
        }
    }
    if let Some((p, s)) = current.take() {
        result.insert(p, s);
    }
    for p in paths {
        assert!(
            result.get(*p).is_some_and(|s| s.ino != 0),
            "debugfs could not stat {p}:\n{out}"
        );
    }
    result
}

/// Every xattr of each path, read back with `ea_list` + `ea_get -f`.
pub fn xattrs_all(image: &Path, paths: &[&str]) -> HashMap<String, BTreeMap<String, Vec<u8>>> {
    let cmds: Vec<String> = paths.iter().map(|p| format!("ea_list {p}")).collect();
    let out = debugfs(image, &cmds);
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("debugfs: ea_list ") {
            current = Some(p.to_string());
            names.entry(p.to_string()).or_default();
        } else if let (Some(p), Some(rest)) = (&current, line.strip_prefix("  ")) {
            let name = rest.split(" (").next().unwrap().to_string();
            names.entry(p.clone()).or_default().push(name);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut gets = Vec::new();
    let mut files = Vec::new();
    for (p, list) in &names {
        for (i, n) in list.iter().enumerate() {
            let f = dir.path().join(format!("{}-{i}", files.len()));
            gets.push(format!("ea_get -f {} {p} {n}", f.display()));
            files.push((p.clone(), n.clone(), f));
        }
    }
    let out = debugfs(image, &gets);
    let mut result: HashMap<String, BTreeMap<String, Vec<u8>>> =
        names.keys().map(|p| (p.clone(), BTreeMap::new())).collect();
    for (p, n, f) in files {
        let v = std::fs::read(&f).unwrap_or_else(|e| panic!("ea_get {p} {n}: {e}\n{out}"));
        result.entry(p).or_default().insert(n, v);
    }
    result
}

/// A deterministic pseudo-random byte stream (xorshift), so large files
/// are not trivially compressible or zero.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn file(t: &mut Tree, path: &str, data: Vec<u8>, mode: u16) {
    t.insert(path, Node::file(Data::Bytes(data), mode)).unwrap();
}

pub fn node(kind: Kind, mode: u16, uid: u32, gid: u32) -> Node {
    Node {
        kind,
        mode,
        uid,
        gid,
        xattrs: BTreeMap::new(),
    }
}

/// A VFS_CAP_REVISION_2 `security.capability` value granting `cap`.
pub fn capability(cap: u32) -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec(); // revision 2, effective
    v.extend_from_slice(&(1u32 << cap).to_le_bytes()); // permitted lo
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable lo
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted hi
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable hi
    v
}

/// A POSIX ACL in VFS xattr form: owner rw, `uid` r, group r, mask r,
/// other none.
pub fn acl(uid: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, uid),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A tree with every node kind and the awkward cases: a 3000-entry
/// directory, ~10k files, a 50 MB file read from the host, a file of
/// alternating data and holes (thousands of extents: a two-level extent
/// tree), deep paths, 255-byte names, xattrs in the inode, in a block and
/// shared, ACLs, setuid, 32-bit ids, hard links, fast and slow symlinks.
pub fn big_tree(host: &Path) -> Tree {
    let mut t = Tree::new();
    t.mkdir_p("/usr/bin").unwrap();
    let mut ping = Node::file(Data::Bytes(b"#!/bin/sh\necho ping\n".to_vec()), 0o755);
    ping.xattrs
        .insert("security.capability".into(), capability(13));
    t.insert("/usr/bin/ping", ping).unwrap();
    t.insert(
        "/usr/bin/sudo",
        node(Kind::File(Data::Bytes(b"sudo".to_vec())), 0o4755, 0, 0),
    )
    .unwrap();
    t.insert(
        "/usr/bin/wall",
        node(Kind::File(Data::Bytes(b"wall".to_vec())), 0o2755, 0, 5),
    )
    .unwrap();
    t.insert(
        "/usr/bin/sudoedit",
        node(Kind::Hardlink("/usr/bin/sudo".into()), 0, 0, 0),
    )
    .unwrap();
    t.insert(
        "/usr/bin/sudo2",
        node(Kind::Hardlink("/usr/bin/sudo".into()), 0, 0, 0),
    )
    .unwrap();
    t.insert("/usr/bin/vi", Node::symlink("vim.basic")).unwrap();
    t.insert("/usr/bin/l59", Node::symlink("x".repeat(59)))
        .unwrap();
    t.insert("/usr/bin/l60", Node::symlink("y".repeat(60)))
        .unwrap();
    t.insert(
        "/usr/bin/l4000",
        Node::symlink(format!("/{}", "z/".repeat(1999))),
    )
    .unwrap();

    t.mkdir_p("/dev").unwrap();
    t.insert(
        "/dev/null",
        node(Kind::CharDev { major: 1, minor: 3 }, 0o666, 0, 0),
    )
    .unwrap();
    t.insert(
        "/dev/sda",
        node(Kind::BlockDev { major: 8, minor: 0 }, 0o660, 0, 6),
    )
    .unwrap();
    t.insert(
        "/dev/nvme",
        node(
            Kind::BlockDev {
                major: 259,
                minor: 70000,
            },
            0o660,
            0,
            6,
        ),
    )
    .unwrap();
    t.insert("/dev/initctl", node(Kind::Fifo, 0o600, 0, 0))
        .unwrap();
    t.insert("/dev/log", node(Kind::Socket, 0o666, 0, 0))
        .unwrap();

    let big_uid = 100_000;
    t.insert("/home", Node::dir(0o755)).unwrap();
    t.insert("/home/user", node(Kind::Dir, 0o700, big_uid, big_uid + 1))
        .unwrap();
    let mut notes = node(
        Kind::File(Data::Bytes(b"notes".to_vec())),
        0o640,
        big_uid,
        70_000,
    );
    notes.xattrs.insert("user.small".into(), b"v".to_vec());
    notes.xattrs.insert("user.empty".into(), Vec::new());
    notes
        .xattrs
        .insert("trusted.overlay.opaque".into(), b"y".to_vec());
    notes.xattrs.insert("user.big".into(), noise(9, 1500));
    notes
        .xattrs
        .insert("system.posix_acl_access".into(), acl(1000));
    t.insert("/home/user/notes", notes).unwrap();
    let mut shared_dir = node(Kind::Dir, 0o2775, 0, 100);
    shared_dir
        .xattrs
        .insert("system.posix_acl_default".into(), acl(1001));
    t.insert("/home/shared", shared_dir).unwrap();
    // Identical out-of-inode xattrs: one block with refcount 3.
    for i in 0..3 {
        let mut n = Node::file(Data::Bytes(format!("labelled {i}").into_bytes()), 0o644);
        n.xattrs.insert(
            "security.selinux".into(),
            b"system_u:object_r:etc_t:s0".to_vec(),
        );
        n.xattrs.insert("user.blob".into(), noise(5, 400));
        t.insert(&format!("/home/shared/f{i}"), n).unwrap();
    }

    // 3000 entries in one directory.
    t.insert("/many", Node::dir(0o755)).unwrap();
    for i in 0..3000 {
        file(
            &mut t,
            &format!("/many/entry-{i:05}-{}", "n".repeat(i % 40)),
            format!("{i}\n").into_bytes(),
            0o644,
        );
    }
    // ~7000 more files in 70 directories.
    for d in 0..70 {
        let dir = format!("/spread/d{d:02}");
        t.mkdir_p(&dir).unwrap();
        for i in 0..100 {
            let len = (d * 100 + i) % 9000;
            file(
                &mut t,
                &format!("{dir}/f{i}"),
                noise((d * 1000 + i) as u64, len),
                0o644,
            );
        }
    }
    // Edge sizes.
    t.mkdir_p("/sizes").unwrap();
    for n in [0usize, 1, 4095, 4096, 4097, 8192, 65536 + 3] {
        file(&mut t, &format!("/sizes/s{n}"), noise(n as u64, n), 0o644);
    }
    file(&mut t, "/sizes/zeros", vec![0u8; 3 * 4096 + 5], 0o644);
    let mut leading_hole = vec![0u8; 10 * 4096];
    leading_hole.extend_from_slice(b"tail");
    file(&mut t, "/sizes/leading-hole", leading_hole, 0o644);
    t.insert("/sizes/empty-dir", Node::dir(0o755)).unwrap();

    // A 50 MB file from the host, and a file with 3000 one-block extents.
    std::fs::write(host.join("big"), noise(42, 50_000_000)).unwrap();
    t.mkdir_p("/big").unwrap();
    t.insert("/big/blob", Node::file(Data::Path(host.join("big")), 0o600))
        .unwrap();
    let mut holes = vec![0u8; 6000 * 4096];
    for b in 0..3000 {
        holes[b * 2 * 4096] = 1 + (b % 200) as u8;
    }
    std::fs::write(host.join("holes"), &holes).unwrap();
    t.insert(
        "/big/holes",
        Node::file(Data::Path(host.join("holes")), 0o644),
    )
    .unwrap();

    // Deep and long.
    let mut deep = String::new();
    for i in 0..120 {
        deep.push_str(&format!("/d{i}"));
    }
    t.mkdir_p(&deep).unwrap();
    file(&mut t, &format!("{deep}/bottom"), b"deep".to_vec(), 0o644);
    let long = "L".repeat(255);
    t.insert(&format!("/{long}"), Node::dir(0o755)).unwrap();
    file(
        &mut t,
        &format!("/{long}/{}", "F".repeat(255)),
        b"long".to_vec(),
        0o644,
    );
    t
}
