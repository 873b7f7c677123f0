//! Extended attributes: in the inode's spare 96 bytes first, the rest in
//! one shared xattr block.
//!
//! Names are stored as a prefix index plus suffix, entries sorted the way
//! the kernel's block lookup expects (index, name length, name), each with
//! the entry hash e2fsck verifies. POSIX ACLs arrive in the VFS xattr format
//! (what `getfattr` shows) and are stored in ext4's compact on-disk format,
//! which is what the kernel reads.

use std::collections::BTreeMap;

use crate::crc32c;
use crate::error::Ext4Error;
use crate::geometry::{BLOCK_SIZE, INODE_SIZE};
use crate::le::{put_u16, put_u32, put_u8};

const MAGIC: u32 = 0xEA02_0000;
const ENTRY: usize = 16;
const BLOCK_HEADER: usize = 32;
/// Inode bytes used by the fixed fields (128 + `i_extra_isize` of 32).
pub(crate) const IBODY_OFFSET: usize = 160;
/// Space after the fixed inode fields: magic, entries, end marker, values.
pub(crate) const IBODY_LEN: usize = INODE_SIZE as usize - IBODY_OFFSET;
const BS: usize = BLOCK_SIZE as usize;
/// The kernel's limit on inodes sharing one xattr block.
pub(crate) const MAX_REFCOUNT: u32 = 1024;

const ACL_ACCESS: u8 = 2;
const ACL_DEFAULT: u8 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

fn entry_len(name_len: usize) -> usize {
    (ENTRY + name_len + 3) & !3
}

fn value_len(size: usize) -> usize {
    (size + 3) & !3
}

fn bad(path: &str, name: &str, reason: impl Into<String>) -> Ext4Error {
    Ext4Error::BadXattr {
        path: path.to_string(),
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// The kernel's name index for a full xattr name, and the stored suffix.
fn split_name<'a>(path: &str, full: &'a str) -> Result<(u8, &'a str), Ext4Error> {
    const PREFIXES: [(&str, u8); 4] = [
        ("user.", 1),
        ("trusted.", 4),
        ("security.", 6),
        ("system.", 7),
    ];
    match full {
        "system.posix_acl_access" => return Ok((ACL_ACCESS, "")),
        "system.posix_acl_default" => return Ok((ACL_DEFAULT, "")),
        "system.richacl" => return Ok((8, "")),
        // Inline file data lives under this name; storing it as an xattr
        // would make the kernel treat the file as inline_data.
        "system.data" => return Err(bad(path, full, "reserved for ext4 inline data")),
        _ => {}
    }
    for (prefix, index) in PREFIXES {
        if let Some(rest) = full.strip_prefix(prefix) {
            if rest.is_empty() {
                return Err(bad(path, full, "empty name after the prefix"));
            }
            if rest.len() > 255 {
                return Err(bad(
                    path,
                    full,
                    format!("name is {} bytes; at most 255 after the prefix", rest.len()),
                ));
            }
            return Ok((index, rest));
        }
    }
    Err(bad(
        path,
        full,
        "unknown namespace (ext4 stores user., trusted., security. and system.)",
    ))
}

/// VFS `posix_acl_xattr` (version 2, 8-byte entries) to ext4's on-disk ACL
/// (version 1, 4-byte entries for the owner/group/mask/other tags).
fn acl_to_disk(path: &str, name: &str, value: &[u8]) -> Result<Vec<u8>, Ext4Error> {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    if value.len() < 4 || (value.len() - 4) % 8 != 0 {
        return Err(bad(
            path,
            name,
            format!("{} bytes is not a POSIX ACL in xattr format", value.len()),
        ));
    }
    let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
    if version != 2 {
        return Err(bad(
            path,
            name,
            format!("POSIX ACL xattr version {version}; expected 2"),
        ));
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in value[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        match tag {
            USER_OBJ | GROUP_OBJ | MASK | OTHER => out.extend_from_slice(&e[..4]),
            USER | GROUP => out.extend_from_slice(e),
            _ => return Err(bad(path, name, format!("unknown ACL tag {tag:#x}"))),
        }
    }
    Ok(out)
}

/// Parses a node's xattrs into stored form, sorted for lookup.
pub(crate) fn parse(
    path: &str,
    xattrs: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<Attr>, Ext4Error> {
    let mut out = Vec::with_capacity(xattrs.len());
    for (full, value) in xattrs {
        let (index, suffix) = split_name(path, full)?;
        let value = if index == ACL_ACCESS || index == ACL_DEFAULT {
            acl_to_disk(path, full, value)?
        } else {
            value.clone()
        };
        out.push(Attr {
            index,
            name: suffix.as_bytes().to_vec(),
            value,
        });
    }
    out.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    Ok(out)
}

/// The entry hash e2fsck and the kernel check.
fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    if !value.is_empty() {
        let mut padded = value.to_vec();
        padded.resize(value_len(value.len()), 0);
        for w in padded.chunks_exact(4) {
            h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
    }
    h
}

/// Writes entries at `entries_at` and values downward from `values_end`;
/// value offsets are relative to `base`. Returns the entry hashes.
fn lay_out(
    buf: &mut [u8],
    attrs: &[&Attr],
    entries_at: usize,
    values_end: usize,
    base: usize,
) -> Vec<u32> {
    let mut at = entries_at;
    let mut vend = values_end;
    let mut hashes = Vec::with_capacity(attrs.len());
    for a in attrs {
        let voff = if a.value.is_empty() {
            0
        } else {
            vend -= value_len(a.value.len());
            buf[vend..vend + a.value.len()].copy_from_slice(&a.value);
            vend - base
        };
        let hash = entry_hash(&a.name, &a.value);
        put_u8(buf, at, a.name.len() as u8);
        put_u8(buf, at + 1, a.index);
        put_u16(buf, at + 2, voff as u16);
        put_u32(buf, at + 4, 0);
        put_u32(buf, at + 8, a.value.len() as u32);
        put_u32(buf, at + 12, hash);
        buf[at + ENTRY..at + ENTRY + a.name.len()].copy_from_slice(&a.name);
        at += entry_len(a.name.len());
        hashes.push(hash);
    }
    hashes
}

/// Where a node's xattrs go.
#[derive(Debug, Default)]
pub(crate) struct Placed {
    /// The bytes after the fixed inode fields (empty: no in-inode xattrs).
    pub ibody: Vec<u8>,
    /// The xattr block without refcount and checksum (see [`finish_block`]);
    /// identical bodies are shared between inodes.
    pub block: Option<Vec<u8>>,
}

/// Puts each attribute in the inode if it still fits there, else in the
/// block.
pub(crate) fn place(path: &str, attrs: &[Attr]) -> Result<Placed, Ext4Error> {
    if attrs.is_empty() {
        return Ok(Placed::default());
    }
    // Inode: magic, entries, 4-byte end marker, values.
    let mut ibody_free = IBODY_LEN - 4 - 4;
    let mut block_free = BS - BLOCK_HEADER - 4;
    let (mut inode, mut block) = (Vec::new(), Vec::new());
    let cost_of = |a: &Attr| entry_len(a.name.len()) + value_len(a.value.len());
    for a in attrs {
        let cost = cost_of(a);
        if cost <= ibody_free {
            ibody_free -= cost;
            inode.push(a);
        } else if cost <= block_free {
            block_free -= cost;
            block.push(a);
        } else {
            return Err(Ext4Error::XattrsTooLarge {
                path: path.to_string(),
                needed: attrs.iter().map(cost_of).sum(),
                available: IBODY_LEN - 8 + BS - BLOCK_HEADER - 4,
            });
        }
    }
    let mut placed = Placed::default();
    if !inode.is_empty() {
        let mut buf = vec![0u8; IBODY_LEN];
        put_u32(&mut buf, 0, MAGIC);
        lay_out(&mut buf, &inode, 4, IBODY_LEN, 4);
        placed.ibody = buf;
    }
    if !block.is_empty() {
        let mut buf = vec![0u8; BS];
        put_u32(&mut buf, 0, MAGIC);
        put_u32(&mut buf, 8, 1); // h_blocks
        let hashes = lay_out(&mut buf, &block, BLOCK_HEADER, BS, 0);
        let mut h = 0u32;
        for eh in hashes {
            if eh == 0 {
                // The kernel's rule: a zero entry hash makes the block hash 0.
                h = 0;
                break;
            }
            h = (h << 16) ^ (h >> 16) ^ eh;
        }
        put_u32(&mut buf, 12, h);
        placed.block = Some(buf);
    }
    Ok(placed)
}

/// The xattr block as written at `block_nr`, shared by `refcount` inodes.
pub(crate) fn finish_block(body: &[u8], refcount: u32, block_nr: u64, fs_seed: u32) -> Vec<u8> {
    let mut buf = body.to_vec();
    put_u32(&mut buf, 4, refcount);
    put_u32(&mut buf, 16, 0);
    let csum = crc32c::update(crc32c::update(fs_seed, &block_nr.to_le_bytes()), &buf);
    put_u32(&mut buf, 16, csum);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xattrs(list: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn capability_fits_in_the_inode() {
        // A VFS_CAP_REVISION_2 value: 20 bytes.
        let cap = [
            0u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let attrs = parse("/bin/ping", &xattrs(&[("security.capability", &cap)])).unwrap();
        assert_eq!(attrs[0].index, 6);
        let p = place("/bin/ping", &attrs).unwrap();
        assert!(p.block.is_none());
        assert_eq!(&p.ibody[..4], &MAGIC.to_le_bytes());
        assert_eq!(p.ibody[4], 10); // name length of "capability"
        let voff = u16::from_le_bytes([p.ibody[6], p.ibody[7]]) as usize;
        assert_eq!(&p.ibody[4 + voff..4 + voff + 20], &cap);
    }

    #[test]
    fn large_values_go_to_the_block_and_too_large_fails() {
        let big = vec![7u8; 1000];
        let attrs = parse("/f", &xattrs(&[("user.a", b"1"), ("user.big", &big)])).unwrap();
        let p = place("/f", &attrs).unwrap();
        assert!(!p.ibody.is_empty());
        let block = p.block.unwrap();
        assert_eq!(block[BLOCK_HEADER], 3); // "big"
        let huge = vec![1u8; 5000];
        let attrs = parse("/f", &xattrs(&[("user.huge", &huge)])).unwrap();
        assert!(matches!(
            place("/f", &attrs),
            Err(Ext4Error::XattrsTooLarge { .. })
        ));
    }

    #[test]
    fn names_and_acls() {
        assert!(parse("/f", &xattrs(&[("os2.x", b"")])).is_err());
        assert!(parse("/f", &xattrs(&[("user.", b"")])).is_err());
        assert!(parse("/f", &xattrs(&[("system.data", b"")])).is_err());
        // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let attrs = parse("/f", &xattrs(&[("system.posix_acl_access", &acl)])).unwrap();
        assert_eq!(attrs[0].index, 2);
        assert!(attrs[0].name.is_empty());
        assert_eq!(attrs[0].value.len(), 4 + 4 + 8 + 4 + 4 + 4);
        assert_eq!(&attrs[0].value[..4], &1u32.to_le_bytes());
    }

    #[test]
    fn hash_matches_a_known_value() {
        // name "a", value "b\0\0\0": ((0<<5)^0^'a') -> 0x61; then
        // (0x61 << 16) ^ (0x61 >> 16) ^ 0x62 = 0x0061_0062.
        assert_eq!(entry_hash(b"a", b"b"), 0x0061_0062);
    }
}
