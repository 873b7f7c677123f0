//! The sandbox's root: a tmpfs with a minimal `/etc`, `/proc`, `/dev`,
//! `/tmp`, the spec's binds and the `/sysroot` overlay, made read-only and
//! pivoted into. Runs in pid 1, in its own mount namespace.

use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{umask, Mode};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root, sethostname};

use crate::failure::{io_fail, os_fail, Failure};
use crate::report::ROOT_DIR;
use crate::SandboxSpec;

/// Host files that make a host toolchain work: `/usr/bin/cc` and friends
/// are symlinks through `/etc/alternatives`, and the host's `ld.so.cache`
/// goes with its libraries. Bound read-only when they exist and the spec
/// asks for them ([`SandboxSpec::host_etc`]).
const HOST_ETC: [&str; 4] = [
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];

/// Device nodes bound from the host. A user namespace cannot `mknod`, so
/// binding the host's nodes is the only way to have them.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n\
                        networks: files\nprotocols: files\nservices: files\n";

/// Read-only or writable bind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadOnly,
    ReadWrite,
}

/// Builds the root in `scratch/root` and pivots into it.
pub(crate) fn setup(spec: &SandboxSpec) -> Result<(), Failure> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| os_fail("cannot create a mount namespace", e))?;
    // Without this, our mounts would propagate back to the host's shared mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| os_fail("cannot make the host's mounts private", e))?;

    let root = spec.scratch.join(ROOT_DIR);
    fs::create_dir_all(&root)
        .map_err(|e| io_fail(format!("cannot create sandbox root {}", root.display()), &e))?;
    mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| os_fail(format!("cannot mount tmpfs at {}", root.display()), e))?;

    write_etc(&root, &spec.hostname)?;
    mount_fs(
        &root,
        "proc",
        "/proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_dev(&root)?;
    mount_fs(
        &root,
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_sysroot(&root, &spec.sysroot)?;
    for b in &spec.ro_binds {
        bind(&root, &b.host, &b.inside, Access::ReadOnly)?;
    }
    for b in &spec.rw_binds {
        bind(&root, &b.host, &b.inside, Access::ReadWrite)?;
    }
    for etc in HOST_ETC.iter().filter(|_| spec.host_etc) {
        let (host, inside) = (Path::new(etc), Path::new(etc));
        let named = spec
            .ro_binds
            .iter()
            .chain(&spec.rw_binds)
            .any(|b| b.inside == inside);
        if !named && fs::symlink_metadata(host).is_ok() {
            bind(&root, host, inside, Access::ReadOnly)?;
        }
    }
    for (inside, target) in &spec.symlinks {
        let path = under(&root, inside);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| {
                io_fail(
                    format!("cannot create the parent of symlink {}", inside.display()),
                    &e,
                )
            })?;
        }
        symlink(target, &path).map_err(|e| {
            io_fail(
                format!(
                    "cannot create symlink {} -> {}",
                    inside.display(),
                    target.display()
                ),
                &e,
            )
        })?;
    }

    sethostname(&spec.hostname)
        .map_err(|e| os_fail(format!("cannot set hostname {:?}", spec.hostname), e))?;
    // Writable places are exactly the rw binds, /tmp and /dev/shm.
    mount(
        None::<&str>,
        &root,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| os_fail("cannot make the sandbox root read-only", e))?;

    // pivot_root(".", ".") stacks the old root on top of the new one, where
    // it can be detached; no put_old directory is needed in a read-only root.
    chdir(&root).map_err(|e| os_fail(format!("cannot enter {}", root.display()), e))?;
    pivot_root(".", ".")
        .map_err(|e| os_fail(format!("cannot pivot_root into {}", root.display()), e))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| os_fail("cannot detach the host's root filesystem", e))?;
    chdir("/").map_err(|e| os_fail("cannot enter /", e))?;
    // The net namespace is left as created: only a loopback device, down.
    umask(Mode::from_bits_truncate(0o022));
    chdir(&spec.cwd).map_err(|e| {
        os_fail(
            format!("cannot enter working directory {}", spec.cwd.display()),
            e,
        )
    })?;
    Ok(())
}

/// `inside` (absolute, validated) below `root`. `Path::join` would discard
/// `root` for an absolute path.
fn under(root: &Path, inside: &Path) -> PathBuf {
    let mut path = root.to_path_buf();
    for component in inside.components() {
        if let Component::Normal(name) = component {
            path.push(name);
        }
    }
    path
}

fn write_etc(root: &Path, hostname: &str) -> Result<(), Failure> {
    let etc = root.join("etc");
    fs::create_dir_all(&etc).map_err(|e| io_fail("cannot create /etc", &e))?;
    let files = [
        ("passwd", PASSWD.to_owned()),
        ("group", GROUP.to_owned()),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        ("hostname", format!("{hostname}\n")),
        ("nsswitch.conf", NSSWITCH.to_owned()),
    ];
    for (name, content) in files {
        fs::write(etc.join(name), content)
            .map_err(|e| io_fail(format!("cannot write /etc/{name}"), &e))?;
    }
    Ok(())
}

/// Mounts a fresh filesystem without a backing device (tmpfs, proc).
fn mount_fs(
    root: &Path,
    fstype: &str,
    inside: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Failure> {
    let target = under(root, Path::new(inside));
    fs::create_dir_all(&target)
        .map_err(|e| io_fail(format!("cannot create mount point {inside}"), &e))?;
    mount(Some(fstype), &target, Some(fstype), flags, data)
        .map_err(|e| os_fail(format!("cannot mount {fstype} at {inside}"), e))
}

fn mount_dev(root: &Path) -> Result<(), Failure> {
    mount_fs(
        root,
        "tmpfs",
        "/dev",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        // Some containers have no /dev/tty; nothing in a build needs it.
        if name == "tty" && fs::symlink_metadata(&host).is_err() {
            continue;
        }
        bind(root, &host, &host, Access::ReadWrite)?;
    }
    let dev = root.join("dev");
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name))
            .map_err(|e| io_fail(format!("cannot create symlink /dev/{name} -> {target}"), &e))?;
    }
    mount_fs(
        root,
        "tmpfs",
        "/dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    // Ptys are a nicety (some test suites want them), not a requirement: a
    // kernel that refuses a devpts instance here just gets no /dev/ptmx.
    let pts = dev.join("pts");
    fs::create_dir_all(&pts).map_err(|e| io_fail("cannot create mount point /dev/pts", &e))?;
    let devpts = mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    if devpts.is_ok() {
        symlink("pts/ptmx", dev.join("ptmx"))
            .map_err(|e| io_fail("cannot create symlink /dev/ptmx -> pts/ptmx", &e))?;
    }
    Ok(())
}

fn mount_sysroot(root: &Path, dirs: &[PathBuf]) -> Result<(), Failure> {
    let inside = Path::new("/sysroot");
    let target = under(root, inside);
    match dirs {
        [] => fs::create_dir_all(&target)
            .map_err(|e| io_fail("cannot create mount point /sysroot", &e)),
        [only] => bind(root, only, inside, Access::ReadOnly),
        _ => {
            let mut lower = Vec::new();
            for (i, dir) in dirs.iter().enumerate() {
                match fs::metadata(dir) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(os_fail(
                            format!("cannot use {} as a sysroot layer", dir.display()),
                            Errno::ENOTDIR,
                        ))
                    }
                    Err(e) => {
                        return Err(io_fail(
                            format!("cannot use {} as a sysroot layer", dir.display()),
                            &e,
                        ))
                    }
                }
                if i > 0 {
                    lower.push(b':');
                }
                lower.extend(escape_overlay_path(dir.as_os_str().as_bytes()));
            }
            fs::create_dir_all(&target)
                .map_err(|e| io_fail("cannot create mount point /sysroot", &e))?;
            let mut data = b"lowerdir=".to_vec();
            data.extend(&lower);
            // Without an upperdir an overlay is read-only by construction;
            // MS_RDONLY makes that visible in /proc/mounts too.
            mount(
                Some("overlay"),
                &target,
                Some("overlay"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(OsStr::from_bytes(&data)),
            )
            .map_err(|e| {
                os_fail(
                    format!(
                        "cannot mount an overlay of {} at /sysroot",
                        String::from_utf8_lossy(&lower)
                    ),
                    e,
                )
            })
        }
    }
}

/// overlayfs splits its options on `,` and `lowerdir` on `:`; both honour
/// a backslash escape.
fn escape_overlay_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if matches!(b, b'\\' | b':' | b',') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Binds `host` at `inside` below `root`. Recursive, so that mounts below
/// `host` come along: a user namespace refuses a non-recursive bind of a
/// tree with (locked) submounts.
fn bind(root: &Path, host: &Path, inside: &Path, access: Access) -> Result<(), Failure> {
    let what = || {
        let ro = if access == Access::ReadOnly {
            " read-only"
        } else {
            ""
        };
        format!(
            "cannot bind-mount {} at {}{ro}",
            host.display(),
            inside.display()
        )
    };
    let meta = fs::metadata(host).map_err(|e| io_fail(what(), &e))?;
    let target = under(root, inside);
    make_mount_point(&target, meta.is_dir()).map_err(|e| {
        io_fail(
            format!(
                "cannot create mount point {} for {}",
                inside.display(),
                host.display()
            ),
            &e,
        )
    })?;
    mount(
        Some(host),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| os_fail(what(), e))?;
    if access == Access::ReadOnly {
        remount_read_only(&target).map_err(|e| os_fail(what(), e))?;
    }
    Ok(())
}

fn make_mount_point(target: &Path, dir: bool) -> io::Result<()> {
    if dir {
        return fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(target).is_err() {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(target)?;
    }
    Ok(())
}

/// Makes a fresh bind mount read-only.
///
/// A bind ignores `MS_RDONLY`, so this is a second, remounting step. In a
/// user namespace the host mount's nosuid/nodev/noexec flags are locked: a
/// remount that would clear them is refused with EPERM, so they are read
/// back with statvfs and kept. (Atime flags are kept by the kernel when the
/// remount names none.) That remount only covers the top mount; submounts
/// brought along by the recursive bind are made read-only with
/// `mount_setattr(AT_RECURSIVE)` (Linux 5.12+).
fn remount_read_only(target: &Path) -> Result<(), Errno> {
    let locked = statvfs(target)?.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if locked.contains(st) {
            flags |= ms;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
    set_read_only_recursive(target)
}

fn set_read_only_recursive(target: &Path) -> Result<(), Errno> {
    let path = CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` is a mount_attr of the size
    // passed; both outlive the call, which only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        // Older kernel: the top mount is read-only, submounts stay as they are.
        Err(Errno::ENOSYS) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(
            escape_overlay_path(b"/a:b,c\\d"),
            b"/a\\:b\\,c\\\\d".to_vec()
        );
    }
}
