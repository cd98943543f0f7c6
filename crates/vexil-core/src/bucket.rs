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

/// Unleash's seed for variant (split) hashing; rollouts use seed 0.
const UNLEASH_VARIANT_SEED: u32 = 86_028_157;

/// An Unleash rollout's bucket, on Vexil's 100,000-bucket scale: Unleash includes an entity iff
/// `normalized <= p` with `normalized = murmur3("salt:value", 0) % 100 + 1` and a whole `p`,
/// which is `(normalized - 1) * 1000 < p * 1000`, Vexil's own rollout test.
pub fn unleash_rollout_bucket(salt: &str, value: &str) -> u32 {
    (murmur3_parts(&[salt.as_bytes(), b":", value.as_bytes()], 0) % 100) * 1000
}

/// An Unleash variant pick's bucket, on Vexil's scale: Unleash picks the first variant whose
/// running weight (0..=1000, here a split's boundary / 100) is `>= n`, with
/// `n = murmur3("salt:value", 86028157) % 1000 + 1`; that is `(n - 1) * 100 + 99 < boundary`,
/// Vexil's own split test.
pub fn unleash_split_bucket(salt: &str, value: &str) -> u32 {
    (murmur3_parts(
        &[salt.as_bytes(), b":", value.as_bytes()],
        UNLEASH_VARIANT_SEED,
    ) % 1000)
        * 100
        + 99
}

/// flagd's `fractional` (v2) bucket, on Vexil's 100,000-bucket scale: flagd hashes
/// `murmur3(utf8(bucketing value), 0)` as a u32 `h` and picks the first entry whose running
/// weight is `> (h * total) >> 32`. With `bucket = (h * 100_000) >> 32`, a split whose
/// boundaries are exported as weights on a total of 100,000 picks exactly as Vexil does:
/// both tests are `h * 100_000 < boundary * 2^32`.
pub fn flagd_bucket(salt: &str, value: &str) -> u32 {
    let h = u64::from(murmur3_parts(&[salt.as_bytes(), value.as_bytes()], 0));
    // h < 2^32, so the result is < 100_000.
    ((h * u64::from(BUCKETS)) >> 32) as u32
}

/// MurmurHash3 x86 32-bit of the concatenated parts (no allocation: blocks may span parts).
pub fn murmur3_parts(parts: &[&[u8]], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mix = |mut k: u32| {
        k = k.wrapping_mul(C1);
        k = k.rotate_left(15);
        k.wrapping_mul(C2)
    };
    let mut h = seed;
    let mut len: usize = 0;
    let mut tail = [0u8; 4];
    let mut filled = 0;
    for part in parts {
        for &byte in *part {
            if let Some(slot) = tail.get_mut(filled) {
                *slot = byte;
            }
            filled += 1;
            len += 1;
            if filled == 4 {
                h ^= mix(u32::from_le_bytes(tail));
                h = h.rotate_left(13);
                h = h.wrapping_mul(5).wrapping_add(0xe654_6b64);
                filled = 0;
            }
        }
    }
    if filled > 0 {
        let mut k = 0u32;
        for (i, byte) in tail.iter().take(filled).enumerate() {
            k |= u32::from(*byte) << (8 * i);
        }
        h ^= mix(k);
    }
    // The length is mixed in modulo 2^32, as the reference implementation does.
    h ^= len as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
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

    // Unleash's vectors from shared/reference/bucketing.md.
    #[test]
    fn murmur3_reference_vectors() {
        let m = |s: &str| murmur3_parts(&[s.as_bytes()], 0);
        assert_eq!(m("Feature.flexibleRollout.10:174"), 3_067_997_709);
        assert_eq!(m("Feature.flexibleRollout.10:499"), 330_494_531);
        assert_eq!(m("new-checkout:user-42"), 1_499_260_774);
        // Blocks spanning the parts hash as the concatenation.
        assert_eq!(
            murmur3_parts(&[b"new-chec", b"kout:", b"use", b"r-42"], 0),
            1_499_260_774
        );
        // normalized = hash % 100 + 1: 10 is in at 10 %, 32 is out.
        assert!(unleash_rollout_bucket("Feature.flexibleRollout.10", "174") < 10_000);
        assert!(unleash_rollout_bucket("Feature.flexibleRollout.10", "499") >= 10_000);
        assert_eq!(unleash_rollout_bucket("new-checkout", "user-42"), 74_000);
    }

    /// Vexil with `bucketing: unleash` against Unleash's own engine (yggdrasil): the same
    /// rollouts and variant picks for 2,000 users.
    #[test]
    fn unleash_bucketing_agrees_with_yggdrasil() {
        let features: unleash_yggdrasil::ClientFeatures = serde_json::from_value(serde_json::json!({
            "version": 2,
            "features": [
                {"name": "ramp", "enabled": true, "strategies": [{
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "37", "stickiness": "default", "groupId": "ramp"},
                    "constraints": []
                }]},
                {"name": "colors", "enabled": true, "strategies": [{"name": "default", "parameters": {}}],
                 "variants": [
                    {"name": "red", "weight": 500, "weightType": "variable", "stickiness": "default"},
                    {"name": "green", "weight": 300, "weightType": "variable", "stickiness": "default"},
                    {"name": "blue", "weight": 200, "weightType": "variable", "stickiness": "default"}
                 ]}
            ]
        }))
        .unwrap();
        let engine = unleash_yggdrasil::EngineState::default();
        engine.take_state(unleash_yggdrasil::UpdateMessage::FullResponse(features));
        let loaded = crate::source::from_memory([(
            "f.yaml",
            "flags:
  ramp:
    rules: [{ rollout: 37, bucketing: unleash }]
  colors:
    bucketing: unleash
    type: string
    variants: { red: red, green: green, blue: blue }
    default: red
    rules: [{ split: { red: 50, green: 30, blue: 20 } }]
",
        )]);
        let compiled = crate::compile(&loaded.files, &crate::CompileOptions::default());
        let snapshot = compiled
            .snapshot
            .unwrap_or_else(|| panic!("{:#?}", compiled.diagnostics));
        let (mut on, mut seen) = (0, std::collections::BTreeSet::new());
        for i in 0..2000 {
            let user = format!("user-{i}");
            let ctx = unleash_yggdrasil::Context {
                user_id: Some(user.clone()),
                ..Default::default()
            };
            let vexil_ctx = crate::Context::with_key(user.clone());
            let ramp = snapshot.evaluate("default", "ramp", &vexil_ctx).unwrap();
            let expected = engine.is_enabled("ramp", &ctx, &None);
            assert_eq!(
                ramp.variant.value == crate::Value::Bool(true),
                expected,
                "ramp, {user}"
            );
            on += usize::from(expected);
            let color = snapshot.evaluate("default", "colors", &vexil_ctx).unwrap();
            let variant = engine.get_variant("colors", &ctx, &None);
            assert_eq!(&*color.variant.name, variant.name, "colors, {user}");
            seen.insert(variant.name.clone());
        }
        // Both sides of the rollout and every variant were exercised.
        assert!((600..900).contains(&on), "{on} of 2000 in a 37 % rollout");
        assert_eq!(seen.len(), 3);
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
