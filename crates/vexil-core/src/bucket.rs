//! Deterministic bucketing (the contract in shared/reference/bucketing.md, "Vexil's default").

use std::fmt::Write;

/// Number of buckets; a percentage `p` covers `round(p * 1000)` of them.
pub const BUCKETS: u32 = 100_000;

/// `crc32_ieee(salt + value) % 100_000`, without building the concatenated string.
pub fn bucket(salt: &str, value: &str) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(salt.as_bytes());
    hasher.update(value.as_bytes());
    hasher.finalize() % BUCKETS
}

/// A percentage (0..=100, up to three decimals) as a bucket threshold; `None` if out of range
/// or more precise than a thousandth.
pub fn threshold(percent: f64) -> Option<u32> {
    if !(0.0..=100.0).contains(&percent) {
        return None;
    }
    let scaled = percent * 1000.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return None;
    }
    // In 0..=100_000 after the range check, so the cast is exact.
    Some(rounded as u32)
}

/// The text a number buckets as: integers without a fraction (`42`, not `42.0`), as clients
/// that send numbers as strings would write them. Formats on the stack.
pub(crate) fn number_text(n: f64, buf: &mut NumBuf) -> &str {
    buf.len = 0;
    // Writing into a fixed buffer cannot fail for an f64 (at most ~24 bytes); on the impossible
    // overflow we bucket by the truncated text rather than panic.
    let _ = write!(buf, "{n}");
    buf.as_str()
}

/// A small stack buffer for formatting numbers without allocating.
#[derive(Debug)]
pub(crate) struct NumBuf {
    bytes: [u8; 64],
    len: usize,
}

impl NumBuf {
    pub(crate) fn new() -> Self {
        NumBuf {
            bytes: [0; 64],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl Write for NumBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from shared/reference/bucketing.md (checked there with Python's zlib.crc32).
    #[test]
    fn reference_vectors() {
        let cases = [
            ("my_feature", "User;7", 12468, true),
            ("my_feature", "User;1", 31009, false),
            ("new-checkout", "user-42", 65666, false),
            ("new-checkout", "user-43", 1364, true),
            ("checkout-theme", "acct-9001", 32604, false),
            ("ünïcode-flag", "ユーザー1", 75232, false),
        ];
        assert_eq!(threshold(25.0), Some(25_000));
        for (salt, value, expected, included) in cases {
            let b = bucket(salt, value);
            assert_eq!(b, expected, "{salt}+{value}");
            assert_eq!(b < 25_000, included, "{salt}+{value}");
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(threshold(0.0), Some(0));
        assert_eq!(threshold(100.0), Some(100_000));
        assert_eq!(threshold(0.5), Some(500));
        assert_eq!(threshold(33.333), Some(33_333));
        assert_eq!(threshold(33.3333), None);
        assert_eq!(threshold(-1.0), None);
        assert_eq!(threshold(100.5), None);
        assert_eq!(threshold(f64::NAN), None);
    }

    #[test]
    fn numbers_bucket_as_clients_write_them() {
        let mut buf = NumBuf::new();
        assert_eq!(number_text(42.0, &mut buf), "42");
        assert_eq!(number_text(-0.5, &mut buf), "-0.5");
        assert_eq!(number_text(1e21, &mut buf), "1000000000000000000000");
    }
}
