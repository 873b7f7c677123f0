//! The blake3 digest that names everything in the store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte blake3 digest.
///
/// Shown, parsed and serialized as 64 lowercase hex characters so that the
/// on-disk names, JSON documents and log lines all spell a digest the same way.
/// `Ord` follows the hex order, which keeps sorted listings stable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {input:?}: {reason}")]
pub struct DigestParseError {
    /// The offending text (truncated to keep messages readable).
    pub input: String,
    pub reason: &'static str,
}

impl Digest {
    /// The blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0xf)] as char);
        }
        s
    }

    /// Parses 64 hex characters. Uppercase is refused: a digest has exactly
    /// one spelling, so that file names built from it are unique.
    pub fn from_hex(s: &str) -> Result<Digest, DigestParseError> {
        let err = |reason| DigestParseError {
            input: s.chars().take(80).collect(),
            reason,
        };
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(err("expected 64 hex characters"));
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => out[i] = (hi << 4) | lo,
                _ => return Err(err("expected only lowercase hex characters")),
            }
        }
        Ok(Digest(out))
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Digest {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Digest, DigestParseError> {
        Digest::from_hex(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of(b"kiln");
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, blake3::hash(b"kiln").to_hex().as_str());
        assert_eq!(Digest::from_hex(&hex), Ok(d));
        assert_eq!(hex.parse::<Digest>(), Ok(d));
        assert_eq!(d.to_string(), hex);
    }

    #[test]
    fn rejects_bad_hex() {
        let d = Digest::of(b"x").to_hex();
        assert!(Digest::from_hex(&d[..63]).is_err());
        assert!(Digest::from_hex(&format!("{d}0")).is_err());
        assert!(Digest::from_hex(&d.to_uppercase()).is_err());
        assert!(Digest::from_hex(&format!("g{}", &d[1..])).is_err());
        assert!(Digest::from_hex("").is_err());
    }

    #[test]
    fn serde_as_hex_string() {
        let d = Digest::of(b"serde");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn order_matches_hex_order() {
        let mut ds: Vec<Digest> = (0u8..50).map(|i| Digest::of(&[i])).collect();
        ds.sort();
        let hexes: Vec<String> = ds.iter().map(Digest::to_hex).collect();
        let mut sorted = hexes.clone();
        sorted.sort();
        assert_eq!(hexes, sorted);
    }
}
