//! File capabilities: from the text recipes write (`cap_net_raw+ep`) to the
//! binary `security.capability` xattr value the kernel reads.
//!
//! Manifests keep capabilities as text so they stay readable and diffable;
//! the image needs the kernel's `struct vfs_cap_data`. We write revision 2
//! (20 bytes), what `setcap` writes for a file without a namespace root uid,
//! so an image built here carries the same bytes as one made with `setcap`.

use std::fmt;

/// `VFS_CAP_REVISION_2` from `<linux/capability.h>`.
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
/// `VFS_CAP_FLAGS_EFFECTIVE`: the file's single "effective" bit.
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;

/// Capability names in kernel bit order (`CAP_CHOWN` = 0 …
/// `CAP_CHECKPOINT_RESTORE` = 40).
///
/// The list is fixed here rather than read from the running kernel (which
/// is what libcap does for `all`), so the bytes of an image never depend on
/// the machine that built it.
pub const CAP_NAMES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

/// Why a capability text was refused, with where in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capability text {text:?}: {reason}")]
pub struct CapError {
    pub text: String,
    pub reason: String,
}

/// The three capability sets of a file, one bit per capability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCaps {
    pub permitted: u64,
    pub inheritable: u64,
    /// Whether every permitted/inheritable capability is raised into the
    /// effective set at exec. A file has a single effective bit, not a set.
    pub effective: bool,
}

impl FileCaps {
    /// Parses the `cap_from_text(3)` syntax: whitespace-separated clauses,
    /// each a comma-separated list of capability names (or `all`; empty
    /// before `=` also means all) followed by one or more operator/flags
    /// pairs, `=`, `+` or `-` with flags from `e`, `i`, `p`. Clauses apply
    /// in order to initially empty sets. Names are matched without regard
    /// to case.
    ///
    /// Refused, with the position in the text: unknown names, unknown
    /// flags, a missing operator, and an effective set that names some but
    /// not all of the permitted/inheritable capabilities (a file has one
    /// effective bit, so that state can't be stored).
    pub fn parse(text: &str) -> Result<FileCaps, CapError> {
        let err = |reason: String| CapError {
            text: text.to_string(),
            reason,
        };
        let (mut e, mut i, mut p) = (0u64, 0u64, 0u64);
        let mut any_clause = false;
        for (start, clause) in clauses(text) {
            any_clause = true;
            let Some(op_at) = clause.find(['=', '+', '-']) else {
                return Err(err(format!(
                    "clause {clause:?} at column {} has no operator (`=`, `+` or `-`)",
                    start + 1
                )));
            };
            let list = &clause[..op_at];
            let caps = cap_list(list, start).map_err(err)?;
            let mut rest = clause[op_at..].char_indices().peekable();
            while let Some((at, op)) = rest.next() {
                if !matches!(op, '=' | '+' | '-') {
                    return Err(err(format!(
                        "unexpected {op:?} at column {}: expected `=`, `+` or `-`",
                        start + op_at + at + 1
                    )));
                }
                if op != '=' && list.is_empty() {
                    return Err(err(format!(
                        "`{op}` at column {} needs a capability list before it",
                        start + op_at + at + 1
                    )));
                }
                let mut flags = (false, false, false);
                while let Some(&(fat, f)) = rest.peek() {
                    match f {
                        'e' => flags.0 = true,
                        'i' => flags.1 = true,
                        'p' => flags.2 = true,
                        '=' | '+' | '-' => break,
                        other => {
                            return Err(err(format!(
                                "unknown flag {other:?} at column {}: flags are `e`, `i` and `p`",
                                start + op_at + fat + 1
                            )))
                        }
                    }
                    rest.next();
                }
                if op != '=' && flags == (false, false, false) {
                    return Err(err(format!(
                        "`{op}` at column {} is not followed by any of the flags `e`, `i`, `p`",
                        start + op_at + at + 1
                    )));
                }
                let apply = |set: &mut u64, on: bool| match op {
                    '=' if on => *set |= caps,
                    '=' => *set &= !caps,
                    '+' if on => *set |= caps,
                    '-' if on => *set &= !caps,
                    _ => {}
                };
                apply(&mut e, flags.0);
                apply(&mut i, flags.1);
                apply(&mut p, flags.2);
            }
        }
        if !any_clause {
            return Err(err("no capabilities given".into()));
        }
        if e != 0 && e != (p | i) {
            return Err(err(format!(
                "the effective flag is set for {} but not for {}: a file has one effective \
                 bit that applies to all its permitted and inheritable capabilities",
                names(e),
                names((p | i) & !e)
            )));
        }
        Ok(FileCaps {
            permitted: p,
            inheritable: i,
            effective: e != 0,
        })
    }

    /// The `security.capability` xattr value: `struct vfs_cap_data`,
    /// revision 2, little-endian: `magic_etc`, then permitted and
    /// inheritable for bits 0–31, then for bits 32–63.
    pub fn to_vfs_cap_data(self) -> Vec<u8> {
        let magic = VFS_CAP_REVISION_2
            | if self.effective {
                VFS_CAP_FLAGS_EFFECTIVE
            } else {
                0
            };
        let words = [
            magic,
            self.permitted as u32,
            self.inheritable as u32,
            (self.permitted >> 32) as u32,
            (self.inheritable >> 32) as u32,
        ];
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// Parses capability text straight to the xattr value.
pub fn encode(text: &str) -> Result<Vec<u8>, CapError> {
    Ok(FileCaps::parse(text)?.to_vfs_cap_data())
}

/// Clauses with their byte offset in the text.
fn clauses(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(|c: char| c.is_ascii_whitespace())
        .scan(0usize, |pos, part| {
            let start = *pos;
            *pos += part.len() + 1;
            Some((start, part))
        })
        .filter(|(_, part)| !part.is_empty())
}

/// The bits a comma-separated list names; empty means all (valid before
/// `=` only, which the caller checks). `start` is where the clause starts
/// in the text, for error columns.
fn cap_list(list: &str, start: usize) -> Result<u64, String> {
    let all = (1u64 << CAP_NAMES.len()) - 1;
    if list.is_empty() {
        return Ok(all);
    }
    let mut bits = 0u64;
    let mut col = start;
    for (n, name) in list.split(',').enumerate() {
        let lower = name.to_ascii_lowercase();
        if lower == "all" {
            bits |= all;
        } else if let Some(bit) = CAP_NAMES.iter().position(|c| *c == lower) {
            bits |= 1 << bit;
        } else {
            let what = if name.is_empty() {
                "empty capability name".to_string()
            } else {
                format!("unknown capability {name:?}")
            };
            return Err(format!(
                "{what} at column {} (item {} of the list {list:?})",
                col + 1,
                n + 1
            ));
        }
        col += name.len() + 1;
    }
    Ok(bits)
}

/// `cap_a,cap_b` for error messages.
fn names(bits: u64) -> impl fmt::Display {
    let list: Vec<&str> = CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bits & (1 << bit) != 0)
        .map(|(_, n)| *n)
        .collect();
    list.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(text: &str) -> FileCaps {
        match FileCaps::parse(text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    const NET_RAW: u64 = 1 << 13;
    const NET_ADMIN: u64 = 1 << 12;
    const BIND: u64 = 1 << 10;

    #[test]
    fn common_forms() {
        let ep = FileCaps {
            permitted: NET_RAW,
            inheritable: 0,
            effective: true,
        };
        assert_eq!(caps("cap_net_raw+ep"), ep);
        assert_eq!(caps("cap_net_raw=ep"), ep);
        assert_eq!(caps("CAP_NET_RAW=pe"), ep);
        assert_eq!(
            caps("cap_net_raw,cap_net_admin+ep"),
            FileCaps {
                permitted: NET_RAW | NET_ADMIN,
                inheritable: 0,
                effective: true,
            }
        );
        assert_eq!(
            caps("cap_net_bind_service+eip"),
            FileCaps {
                permitted: BIND,
                inheritable: BIND,
                effective: true,
            }
        );
        assert_eq!(
            caps("cap_net_raw+p"),
            FileCaps {
                permitted: NET_RAW,
                inheritable: 0,
                effective: false,
            }
        );
        // Clauses apply in order; `=` first lowers every flag.
        assert_eq!(
            caps("cap_net_raw,cap_net_admin+eip cap_net_admin=  cap_net_raw-i"),
            ep
        );
        assert_eq!(caps("cap_net_raw=eip-i"), ep);
        let all = caps("=p");
        assert_eq!(all.permitted, (1 << 41) - 1);
        assert_eq!(caps("all=p"), all);
        assert_eq!(caps("cap_checkpoint_restore+p").permitted, 1 << 40);
    }

    #[test]
    fn vfs_cap_data_layout() {
        assert_eq!(
            encode("cap_net_raw+ep").unwrap(),
            [0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            encode("cap_bpf,cap_chown+ip").unwrap(),
            [0, 0, 0, 0x02, 1, 0, 0, 0, 1, 0, 0, 0, 0x80, 0, 0, 0, 0x80, 0, 0, 0]
        );
    }

    #[test]
    fn errors_say_where() {
        let e = FileCaps::parse("cap_net_raw,cap_bogus+ep").unwrap_err();
        assert!(e.reason.contains("unknown capability \"cap_bogus\""), "{e}");
        assert!(e.reason.contains("column 13"), "{e}");
        assert!(e.reason.contains("item 2"), "{e}");
        let e = FileCaps::parse("cap_kill+ep cap_nope=p").unwrap_err();
        assert!(
            e.reason.contains("column 13") && e.reason.contains("item 1"),
            "{e}"
        );
        let e = FileCaps::parse("cap_net_raw+ex").unwrap_err();
        assert!(e.reason.contains("unknown flag 'x' at column 14"), "{e}");
        assert!(FileCaps::parse("cap_net_raw").is_err());
        assert!(FileCaps::parse("+ep").is_err());
        assert!(FileCaps::parse("cap_kill+").is_err());
        assert!(FileCaps::parse("cap_kill,+p").is_err());
        assert!(FileCaps::parse("  ").is_err());
        let e = FileCaps::parse("cap_net_raw+p cap_kill+ep").unwrap_err();
        assert!(e.reason.contains("cap_net_raw"), "{e}");
    }
}
