//! The entry envelope decoder, on raw bytes and on damaged valid entries.
//!
//! - Raw bytes under any key: `decode_entry` never panics. With `reseal`
//!   the last eight bytes are replaced by the checksum of the others, so
//!   the fuzzer gets past the checksum to the structural checks.
//! - A valid entry built from arbitrary parts and encoded under `key`
//!   decodes under `key` to the same entry, and never under another key.
//! - The same bytes flipped, overwritten, truncated, extended and
//!   resealed: decoding never panics, never succeeds under another key,
//!   and whatever decodes under `key` encodes back to the same bytes (the
//!   decoder accepts one spelling of each entry).

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tower_cache::Entry;
use tower_cache::fuzzing::decode_entry;
use xxhash_rust::xxh3::xxh3_64;

/// Length of the checksum that ends an envelope.
const CHECKSUM_LEN: usize = 8;

#[derive(Arbitrary, Debug)]
struct Parts {
    value: Vec<u8>,
    stored_at: u64,
    ttl: u64,
    stale: u64,
    tags: Vec<String>,
    version: Option<u64>,
    load_ms: u32,
    /// Stale windows of its own (revalidate, if-error), and a keep time.
    windows: Option<(u32, u32, u64)>,
}

impl Parts {
    fn entry(&self) -> Entry {
        // The envelope holds at most u16::MAX tags of at most u16::MAX
        // bytes each.
        let tags: Vec<String> = self
            .tags
            .iter()
            .filter(|t| t.len() <= usize::from(u16::MAX))
            .take(usize::from(u16::MAX))
            .cloned()
            .collect();
        let entry = Entry::new(Bytes::copy_from_slice(&self.value))
            .with_stored_at(self.stored_at)
            .with_ttl(Duration::from_millis(self.ttl))
            .with_stale(Duration::from_millis(self.stale))
            .with_tags(tags)
            .with_load_ms(self.load_ms);
        let entry = match self.windows {
            Some((revalidate, if_error, keep)) => entry
                .with_stale_windows(
                    Duration::from_millis(revalidate.into()),
                    Duration::from_millis(if_error.into()),
                )
                .with_keep(Duration::from_millis(keep)),
            None => entry,
        };
        match self.version {
            Some(version) => entry.with_version(version),
            None => entry,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Damage {
    /// XOR the byte at `at` (modulo the length) with `mask`.
    Flip { at: u16, mask: u8 },
    /// Overwrite the byte at `at` (modulo the length).
    Set { at: u16, byte: u8 },
    /// Keep only the first `len` bytes.
    Truncate { len: u16 },
    /// Append bytes.
    Extend(Vec<u8>),
    /// Replace the last eight bytes by the checksum of the others.
    Reseal,
}

#[derive(Arbitrary, Debug)]
struct Input {
    key: String,
    other_key: String,
    raw: Vec<u8>,
    reseal: bool,
    entry: Parts,
    damage: Vec<Damage>,
}

/// Writes the checksum of everything before the last eight bytes into them.
fn reseal(bytes: &mut [u8]) {
    if let Some(body_len) = bytes.len().checked_sub(CHECKSUM_LEN) {
        let sum = xxh3_64(&bytes[..body_len]).to_be_bytes();
        bytes[body_len..].copy_from_slice(&sum);
    }
}

fn damage(bytes: &mut Vec<u8>, how: &Damage) {
    match how {
        Damage::Flip { at, mask } => {
            if !bytes.is_empty() {
                let at = usize::from(*at) % bytes.len();
                bytes[at] ^= mask;
            }
        }
        Damage::Set { at, byte } => {
            if !bytes.is_empty() {
                let at = usize::from(*at) % bytes.len();
                bytes[at] = *byte;
            }
        }
        Damage::Truncate { len } => bytes.truncate(usize::from(*len)),
        Damage::Extend(more) => bytes.extend_from_slice(more),
        Damage::Reseal => reseal(bytes),
    }
}

/// Keys other than `key`: the fuzzer's, and near misses of `key`.
fn other_keys(key: &str, other: &str) -> Vec<String> {
    let mut keys = vec![
        other.to_owned(),
        format!("{key}\0"),
        format!("{key}x"),
        format!(" {key}"),
        key.to_ascii_uppercase(),
        String::new(),
    ];
    let mut shorter = key.to_owned();
    shorter.pop();
    keys.push(shorter);
    keys.retain(|k| k != key);
    keys
}

/// `bytes` decoded under `key`: never panics, never decodes under another
/// key, and what decodes is what encoding the result writes.
fn check(key: &str, others: &[String], bytes: &[u8]) {
    let decoded = Entry::decode(key, Bytes::copy_from_slice(bytes));
    if let Ok(entry) = &decoded {
        let again = entry.encode(key);
        assert_eq!(
            &again[..],
            bytes,
            "a decoded entry encodes back to its bytes"
        );
    }
    for other in others {
        let under_other = Entry::decode(other, Bytes::copy_from_slice(bytes));
        assert!(
            under_other.is_err(),
            "an entry written under {key:?} decodes under {other:?}: {under_other:?}\nbytes: {bytes:02x?}"
        );
    }
}

fuzz_target!(|input: Input| {
    // Raw bytes.
    let mut raw = input.raw.clone();
    if input.reseal {
        reseal(&mut raw);
    }
    let _ = decode_entry(&input.key, &raw);
    let others = other_keys(&input.key, &input.other_key);
    check(&input.key, &others, &raw);

    // A valid entry, then damaged.
    let entry = input.entry.entry();
    let encoded = entry.encode(&input.key);
    let decoded = Entry::decode(&input.key, encoded.clone());
    assert_eq!(
        decoded.as_ref(),
        Ok(&entry),
        "an encoded entry decodes as itself"
    );
    check(&input.key, &others, &encoded);

    let mut bytes = encoded.to_vec();
    for how in &input.damage {
        damage(&mut bytes, how);
        check(&input.key, &others, &bytes);
    }
});
