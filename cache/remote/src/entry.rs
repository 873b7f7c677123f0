//! Signed action-cache entries and the keys that sign them.
//!
//! A remote server is trusted with nothing: an entry is only used when it
//! is signed by a key the consumer lists, names the key it was asked for,
//! and every blob it leads to hashes to what the signed bytes say. The
//! signature covers the whole closure (the output manifest, the log, every
//! file blob, with sizes and, for REAPI, their sha256), so a consumer knows
//! everything it must fetch before it fetches anything.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use kiln_store::Digest;

/// Bumped when the signed bytes change meaning.
pub const SCHEMA: &str = "kiln-remote-entry/1";
const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "kiln-ed25519-secret:";

/// One blob of an entry's closure.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    pub blake3: Digest,
    /// Content size (uncompressed).
    pub size: u64,
    /// The content's sha256 (lowercase hex), for servers that address
    /// blobs by sha256 (REAPI without BLAKE3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What a signer vouches for: building `key` gave `output` (and `log`),
/// whose closure is `blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub schema: String,
    pub key: Digest,
    pub output: Digest,
    pub log: Option<Digest>,
    /// Sorted by blake3, no duplicates.
    pub blobs: Vec<BlobRef>,
}

/// The document stored under `ac/<key>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEntry {
    pub entry: Entry,
    /// `ed25519:<64 hex>`.
    #[serde(default)]
    pub signer: String,
    /// 128 hex.
    #[serde(default)]
    pub signature: String,
}

/// A public key a consumer trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `ed25519:<64 hex>`.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let hex = text.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(|| {
            format!("public key {text:?}: expected `ed25519:` and 64 hex digits (as `kiln cache keygen` prints)")
        })?;
        let bytes = parse_hex32(hex).ok_or_else(|| {
            format!("public key {text:?}: expected 64 hex digits after `ed25519:`")
        })?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| format!("public key {text:?}: not an ed25519 point: {e}"))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A signing key; its text form is kept in a file only its owner reads.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the OS's random source.
    pub fn generate() -> Result<SecretKey, String> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| format!("no randomness from the OS: {e}"))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Parses the text of a key file.
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        let hex = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            format!("expected `{SECRET_PREFIX}` and 64 hex digits (a file written by `kiln cache keygen`)")
        })?;
        let bytes = parse_hex32(hex)
            .ok_or_else(|| format!("expected 64 hex digits after `{SECRET_PREFIX}`"))?;
        Ok(SecretKey(SigningKey::from_bytes(&bytes)))
    }

    /// Reads a key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<SecretKey, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta =
            std::fs::metadata(path).map_err(|e| format!("signing key {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "signing key {}: readable by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("signing key {}: {e}", path.display()))?;
        SecretKey::parse(&text).map_err(|e| format!("signing key {}: {e}", path.display()))
    }

    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", hex::encode(self.0.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `entry`. Fails only if the entry cannot be encoded, which a
    /// signature must never silently cover instead.
    pub fn sign(&self, entry: Entry) -> Result<SignedEntry, serde_json::Error> {
        let signature = self.0.sign(&signed_bytes(&entry)?);
        Ok(SignedEntry {
            entry,
            signer: self.public().to_string(),
            signature: hex::encode(signature.to_bytes()),
        })
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let v = hex::decode(hex).ok()?;
    v.try_into().ok()
}

/// The bytes a signature covers: the schema, then the entry's JSON (field
/// order is fixed by the struct, so the encoding is canonical).
fn signed_bytes(entry: &Entry) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = format!("{SCHEMA}\n").into_bytes();
    bytes.extend(serde_json::to_vec(entry)?);
    Ok(bytes)
}

impl SignedEntry {
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }

    /// Checks a document fetched for `key` and returns its entry, or why it
    /// must not be used.
    pub fn verify(bytes: &[u8], key: &Digest, trusted: &[PublicKey]) -> Result<Entry, String> {
        let signed: SignedEntry =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Kiln cache entry ({e})"))?;
        if signed.signer.is_empty() || signed.signature.is_empty() {
            return Err("the entry is unsigned".into());
        }
        let signer = PublicKey::parse(&signed.signer)
            .map_err(|e| format!("the entry's signer is malformed: {e}"))?;
        if !trusted.contains(&signer) {
            return Err(format!(
                "the entry is signed by {signer}, which is not a trusted key (add it to [cache] trusted_keys in kiln.toml to trust it)"
            ));
        }
        let sig: [u8; 64] = hex::decode(&signed.signature)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or("the entry's signature is not 128 hex digits")?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        signer
            .0
            .verify(
                &signed_bytes(&signed.entry)
                    .map_err(|e| format!("cannot encode the entry: {e}"))?,
                &sig,
            )
            .map_err(|_| format!("the entry's signature by {signer} does not match its content"))?;
        let entry = signed.entry;
        if entry.schema != SCHEMA {
            return Err(format!(
                "unknown entry schema {:?} (this Kiln reads {SCHEMA})",
                entry.schema
            ));
        }
        if entry.key != *key {
            return Err(format!("the entry is for key {}, not {key}", entry.key));
        }
        let listed = |d: &Digest| entry.blobs.iter().any(|b| b.blake3 == *d);
        for d in std::iter::once(&entry.output).chain(entry.log.as_ref()) {
            if !listed(d) {
                return Err(format!(
                    "the entry's closure does not list its own blob {d}"
                ));
            }
        }
        if entry.blobs.windows(2).any(|w| w[0].blake3 >= w[1].blake3) {
            return Err("the entry's closure is not sorted or lists a blob twice".into());
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: Digest) -> Entry {
        let output = Digest::of(b"manifest");
        Entry {
            schema: SCHEMA.into(),
            key,
            output,
            log: None,
            blobs: vec![BlobRef {
                blake3: output,
                size: 8,
                sha256: None,
            }],
        }
    }

    #[test]
    fn sign_and_verify() {
        let sk = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let key = Digest::of(b"key");
        let doc = sk.sign(entry(key)).unwrap().to_json().unwrap();
        let trusted = [sk.public()];
        assert_eq!(
            SignedEntry::verify(&doc, &key, &trusted).unwrap(),
            entry(key)
        );

        let err = SignedEntry::verify(&doc, &key, &[other.public()]).unwrap_err();
        assert!(err.contains("not a trusted key"), "{err}");
        let err = SignedEntry::verify(&doc, &Digest::of(b"k2"), &trusted).unwrap_err();
        assert!(err.contains("is for key"), "{err}");

        let text = String::from_utf8(doc).unwrap();
        let tampered = text.replace("\"size\": 8", "\"size\": 9");
        let err = SignedEntry::verify(tampered.as_bytes(), &key, &trusted).unwrap_err();
        assert!(err.contains("does not match"), "{err}");

        let round = SecretKey::parse(&sk.to_text()).unwrap();
        assert_eq!(round.public(), sk.public());
        assert_eq!(
            PublicKey::parse(&sk.public().to_string()).unwrap(),
            sk.public()
        );
        assert!(PublicKey::parse("ed25519:zz").is_err());
        assert!(SecretKey::parse("nope").is_err());
    }
}
