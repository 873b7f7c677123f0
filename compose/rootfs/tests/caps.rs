//! Capability text → `security.capability` bytes, checked against what
//! libcap's `setcap` writes on a real file.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use common::{have, Env};
use kiln_rootfs::encode_capabilities;

const TEXTS: [&str; 8] = [
    "cap_net_raw+ep",
    "cap_net_raw=ep",
    "cap_net_raw,cap_net_admin+ep",
    "cap_net_bind_service+eip",
    "cap_bpf,cap_chown+ip",
    "cap_kill+i",
    "cap_sys_time,cap_setuid+p cap_sys_time-p cap_perfmon+p",
    "cap_checkpoint_restore,cap_dac_override=ep",
];

fn xattr(path: &Path) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = CString::new("security.capability").ok()?;
    let mut buf = vec![0u8; 64];
    // SAFETY: both strings are NUL-terminated; the buffer is writable for
    // its length.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn bytes_match_setcap() {
    if !have("setcap") {
        return kiln_testkit::skip(
            "bytes_match_setcap",
            "setcap not installed (apt-get install libcap2-bin)",
            kiln_testkit::Cannot::Setup,
        );
    }
    let env = Env::new();
    let file = env.scratch("caps").join("prog");
    std::fs::write(&file, b"x").unwrap();
    let setcap = |text: &str| {
        Command::new("setcap")
            .arg(text)
            .arg(&file)
            .output()
            .unwrap()
    };
    let probe = setcap("cap_kill+p");
    if !probe.status.success() {
        return kiln_testkit::skip(
            "bytes_match_setcap",
            &format!(
                "setcap can't set capabilities here (not root, or no xattr support): {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ),
            kiln_testkit::Cannot::Machine,
        );
    }
    for text in TEXTS {
        let o = setcap(text);
        assert!(
            o.status.success(),
            "setcap {text}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let want = xattr(&file).unwrap_or_else(|| panic!("no xattr after setcap {text}"));
        assert_eq!(encode_capabilities(text).unwrap(), want, "{text}");
    }
    // Both refuse an effective flag on only some capabilities.
    let partial = "cap_net_raw+p cap_kill+ep";
    assert!(!setcap(partial).status.success());
    assert!(encode_capabilities(partial).is_err());
}
