//! CRC32C (Castagnoli), the checksum behind ext4's `metadata_csum` and
//! jbd2's v3 checksums.
//!
//! ext4 chains the raw register value (no final inversion) from one field to
//! the next, seeding with `!0` or with the filesystem's UUID checksum, so
//! this exposes the raw update rather than a finished digest. Only metadata
//! is checksummed, a few MiB per image, so a portable slice-by-8 table is
//! fast enough and keeps the crate free of CPU-specific code.

const POLY: u32 = 0x82F6_3B78; // reflected 0x1EDC6F41

const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    t
}

static T: [[u32; 256]; 8] = tables();

/// Feeds `data` into the raw CRC register `crc` (ext4's `ext4_chksum`).
pub(crate) fn update(mut crc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = T[7][(lo & 0xff) as usize]
            ^ T[6][((lo >> 8) & 0xff) as usize]
            ^ T[5][((lo >> 16) & 0xff) as usize]
            ^ T[4][(lo >> 24) as usize]
            ^ T[3][(hi & 0xff) as usize]
            ^ T[2][((hi >> 8) & 0xff) as usize]
            ^ T[1][((hi >> 16) & 0xff) as usize]
            ^ T[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = T[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::update;

    #[test]
    fn matches_the_standard_check_value() {
        // The CRC-32C catalogue check value for "123456789".
        assert_eq!(!update(!0, b"123456789"), 0xE306_9283);
        // Chaining equals one pass (ext4 feeds fields piecewise).
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = update(!0, &data);
        let parts = update(update(update(!0, &data[..3]), &data[3..517]), &data[517..]);
        assert_eq!(whole, parts);
    }
}
