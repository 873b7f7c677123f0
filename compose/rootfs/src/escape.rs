//! systemd's path escaping (`systemd-escape --path`), for mount unit names.
//!
//! systemd only accepts a mount unit whose name is the escaped form of its
//! `Where=`, so this must match systemd byte for byte: `/var/lib/chrony`
//! must become `var-lib-chrony.mount` or the unit is refused at boot.

/// Escapes a normalized absolute path the way `systemd-escape --path`
/// does (`unit_name_path_escape`): `/` alone becomes `-`; otherwise the
/// leading `/` is dropped, every other `/` becomes `-`, ASCII letters,
/// digits, `:`, `_` and `.` are kept (except a `.` at the very start), and
/// every other byte, `-` and `\` included, becomes `\xNN` (lowercase hex).
///
/// The caller must pass a normalized path (no `//`, `.`, `..`, trailing
/// `/`); state paths are checked for that before they get here.
pub fn path(path: &str) -> String {
    let rel = path.strip_prefix('/').unwrap_or(path);
    if rel.is_empty() {
        return "-".to_string();
    }
    let mut out = String::with_capacity(rel.len());
    for (i, b) in rel.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => push_hex(&mut out, b),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => push_hex(&mut out, b),
        }
    }
    out
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push('x');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_systemd_escape() {
        // Expected values are systemd-escape --path output (systemd 252).
        assert_eq!(path("/var/lib/chrony"), "var-lib-chrony");
        assert_eq!(path("/home/root/.ssh"), "home-root-.ssh");
        assert_eq!(path("/etc/machine-id"), "etc-machine\\x2did");
        assert_eq!(path("/"), "-");
        assert_eq!(path("/.hidden/x"), "\\x2ehidden-x");
        assert_eq!(path("/a-b/.x/ü+@~"), "a\\x2db-.x-\\xc3\\xbc\\x2b\\x40\\x7e");
        assert_eq!(path("/a b\\c:d_e"), "a\\x20b\\x5cc:d_e");
    }
}
