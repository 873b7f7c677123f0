//! CRC32C (Castagnoli) for the superblock checksum.
//!
//! It covers a few KiB once per image, so a small table-driven version is
//! plenty and saves a dependency.

const POLY: u32 = 0x82F6_3B78; // reflected Castagnoli polynomial

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The kernel's raw `crc32c(seed, data)`: no inversion on the way in or out.
fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The value EROFS stores in `checksum`: `crc32c(~0, block[1024..])` over
/// the rest of the superblock's block with the checksum field zeroed.
pub fn superblock(rest_of_block: &[u8]) -> u32 {
    update(!0, rest_of_block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value() {
        // Standard CRC-32C("123456789") = 0xE3069283 inverts the raw value.
        assert_eq!(!update(!0, b"123456789"), 0xE306_9283);
    }
}
