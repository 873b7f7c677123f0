//! Inline extended attributes: the xattr body stored right after an inode.
//!
//! EROFS stores a name as a one-byte prefix index plus the rest of the name,
//! so only names under a known prefix can be written. Xattrs are kept inline
//! (no shared xattr table): values like `security.capability` differ per
//! file anyway, and inline ones need no extra lookups to read.

use std::collections::BTreeMap;

use crate::error::ErofsError;
use crate::format::{
    XATTR_IBODY_HEADER_SIZE, XATTR_INDEX_LUSTRE, XATTR_INDEX_POSIX_ACL_ACCESS,
    XATTR_INDEX_POSIX_ACL_DEFAULT, XATTR_INDEX_SECURITY, XATTR_INDEX_TRUSTED, XATTR_INDEX_USER,
};

/// Full names matched exactly: their whole name is the index.
const EXACT: [(&str, u8); 2] = [
    ("system.posix_acl_access", XATTR_INDEX_POSIX_ACL_ACCESS),
    ("system.posix_acl_default", XATTR_INDEX_POSIX_ACL_DEFAULT),
];

const PREFIXES: [(&str, u8); 4] = [
    ("user.", XATTR_INDEX_USER),
    ("trusted.", XATTR_INDEX_TRUSTED),
    ("lustre.", XATTR_INDEX_LUSTRE),
    ("security.", XATTR_INDEX_SECURITY),
];

/// The name index and the stored remainder of a full xattr name.
fn split(name: &str) -> Option<(u8, &str)> {
    if let Some(&(_, index)) = EXACT.iter().find(|(n, _)| *n == name) {
        return Some((index, ""));
    }
    PREFIXES.iter().find_map(|&(prefix, index)| {
        name.strip_prefix(prefix)
            .filter(|rest| !rest.is_empty())
            .map(|rest| (index, rest))
    })
}

/// Encodes the inline xattr body of an inode (header and entries), or
/// nothing when it has no xattrs. Entries follow the map's name order, so
/// the bytes depend only on the xattrs themselves.
pub fn encode_body(path: &str, xattrs: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, ErofsError> {
    if xattrs.is_empty() {
        return Ok(Vec::new());
    }
    let mut body = vec![0u8; XATTR_IBODY_HEADER_SIZE];
    for (name, value) in xattrs {
        let (index, rest) = split(name).ok_or_else(|| ErofsError::UnsupportedXattr {
            path: path.to_string(),
            name: name.clone(),
        })?;
        let too_large = |len| ErofsError::XattrTooLarge {
            path: path.to_string(),
            name: name.clone(),
            len,
        };
        let name_len = u8::try_from(rest.len()).map_err(|_| too_large(rest.len()))?;
        let value_len = u16::try_from(value.len()).map_err(|_| too_large(value.len()))?;
        body.push(name_len);
        body.push(index);
        body.extend_from_slice(&value_len.to_le_bytes());
        body.extend_from_slice(rest.as_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    // i_xattr_icount counts the header as one and each further 4 bytes.
    if icount(body.len()) > u32::from(u16::MAX) {
        return Err(ErofsError::XattrsTooLarge {
            path: path.to_string(),
            size: body.len(),
        });
    }
    Ok(body)
}

/// The inode's `i_xattr_icount` for a body of `len` bytes.
pub fn icount(len: usize) -> u32 {
    if len == 0 {
        0
    } else {
        ((len - XATTR_IBODY_HEADER_SIZE) / 4 + 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_uses_the_security_index_and_pads_to_four() {
        let mut x = BTreeMap::new();
        x.insert("security.capability".to_string(), vec![1, 2, 3, 4, 5]);
        let body = encode_body("/f", &x).unwrap();
        // header, then len("capability")=10, index 6, value 5
        assert_eq!(&body[12..16], &[10, 6, 5, 0]);
        assert_eq!(&body[16..26], b"capability");
        assert_eq!(&body[26..31], &[1, 2, 3, 4, 5]);
        assert_eq!(body.len(), 32);
        assert_eq!(icount(body.len()), 6);
    }

    #[test]
    fn unknown_prefixes_and_bare_prefixes_are_rejected() {
        for name in ["system.foo", "user.", "os2.x"] {
            let mut x = BTreeMap::new();
            x.insert(name.to_string(), vec![]);
            assert!(
                matches!(
                    encode_body("/f", &x),
                    Err(ErofsError::UnsupportedXattr { .. })
                ),
                "{name}"
            );
        }
        let mut x = BTreeMap::new();
        x.insert("system.posix_acl_access".to_string(), vec![2, 0, 0, 0]);
        let body = encode_body("/f", &x).unwrap();
        assert_eq!(&body[12..16], &[0, 2, 4, 0]);
    }
}
