//! The stored entry and its versioned, self-checking binary envelope.
//!
//! An [`Entry`] is what every [`Store`](crate::store::Store) keeps: the
//! payload as [`Bytes`], three timestamps that drive freshness, the tags
//! it can be invalidated by, and the store's invalidation version it was
//! loaded at (which orders it against invalidations; clocks never do). Stores that leave the process (Redis) write it
//! as one compact envelope, bound to the key it is stored under:
//!
//! ```text
//! magic "TC" | version u8 | flags u8 | key hash u64
//! | stored_at u64 | fresh_until u64 | stale_until u64 | version u64
//! | load_ms u32 | [revalidate u32 | if_error u32] | tag count u16 | (tag len u16, tag bytes)*
//! | payload len u32 | payload | checksum u64
//! ```
//!
//! All integers are big-endian. Flag bit 0 says whether the version is
//! recorded (an entry written before any was is as new as its write).
//! Flag bit 1 says whether the entry carries stale windows of its own (see
//! [`Entry::with_stale_windows`]): the two fields in brackets, each the
//! milliseconds after `fresh_until`, follow only then. The checksum is the XXH3-64 of every byte
//! before it; the key hash is the XXH3-64 of the key the entry was written
//! under. Anything that does not decode exactly (wrong magic, another
//! version, a checksum that does not match, another key's entry, a count
//! larger than the bytes that remain, trailing bytes, a tag that is not
//! UTF-8) is a [`DecodeError`]; stores read it as a miss and remove it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::clock;

use xxhash_rust::xxh3::xxh3_64;

const MAGIC: [u8; 2] = *b"TC";
/// The envelope version this build writes and reads. Entries written by
/// another version read as misses.
pub const ENVELOPE_VERSION: u8 = 3;
/// Bytes before the tags: magic, version, flags, key hash, timestamps,
/// invalidation version, load time and tag count.
const HEADER_LEN: usize = 2 + 1 + 1 + 8 + 8 * 3 + 8 + 4 + 2;
/// Flag bit: the entry's invalidation version is recorded.
const FLAG_VERSIONED: u8 = 1;
/// Flag bit: the entry carries its own stale windows.
const FLAG_WINDOWS: u8 = 2;
/// The checksum that ends the envelope.
const CHECKSUM_LEN: usize = 8;

/// `n` as a `u16` length field, saturating: what does not fit is cut.
pub(crate) fn u16_len(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// `n` as a `u32` length field, saturating: what does not fit is cut.
pub(crate) fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The hash an envelope carries of the key it was written under.
fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// One cached value with its freshness metadata: built with
/// [`Entry::new`] and its `with_*` methods (which keep the timestamps
/// consistent), read with its getters.
///
/// Timestamps are milliseconds since the Unix epoch (see
/// [`now_ms`](crate::now_ms)); they decide freshness only. Invalidations
/// are ordered by [`version`](Entry::version), never by a clock.
///
/// ```
/// use std::time::Duration;
/// use tower_cache::Entry;
///
/// let entry = Entry::new("hello")
///     .with_ttl(Duration::from_secs(60))
///     .with_stale(Duration::from_secs(30))
///     .with_tags(["greetings"]);
/// assert!(entry.is_fresh_at(entry.stored_at()));
/// assert_eq!(entry.stale_until() - entry.fresh_until(), 30_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub(crate) value: Bytes,
    pub(crate) stored_at: u64,
    pub(crate) fresh_until: u64,
    pub(crate) stale_until: u64,
    /// `None` when there are none: an entry without tags allocates nothing
    /// for them.
    pub(crate) tags: Option<Arc<[String]>>,
    /// The invalidation version when `flags` has `FLAG_VERSIONED`, else 0
    /// (read through [`Entry::version`]).
    version: u64,
    pub(crate) load_ms: u32,
    /// The entry's own stale windows when `flags` has `FLAG_WINDOWS`,
    /// else zeros (read through `Entry::windows`).
    windows: StaleWindows,
    /// `FLAG_VERSIONED` and `FLAG_WINDOWS`, as in the envelope. With the
    /// two fields above, 8 bytes fewer than two `Option`s: an L1 slot (the
    /// entry and 8 bytes) and moka's 32 bytes around it fit a 144-byte
    /// allocation with a pointer to spare.
    flags: u8,
}

/// An entry's own stale windows, in milliseconds after it stops being
/// fresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StaleWindows {
    /// Served at once while a background reload runs.
    pub revalidate_ms: u32,
    /// Served when the reload fails.
    pub if_error_ms: u32,
}

impl StaleWindows {
    /// The longer window, in milliseconds.
    fn longest_ms(self) -> u64 {
        u64::from(self.revalidate_ms.max(self.if_error_ms))
    }
}

impl Entry {
    /// The cached bytes, shared and never copied on a hit.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// When the value was read from its origin.
    pub fn stored_at(&self) -> u64 {
        self.stored_at
    }

    /// Until when the entry is fresh and served without a reload.
    pub fn fresh_until(&self) -> u64 {
        self.fresh_until
    }

    /// Until when the entry may be served at all (stale-while-revalidate,
    /// stale-if-error). Stores drop the entry after this instant.
    pub fn stale_until(&self) -> u64 {
        self.stale_until
    }

    /// Tags the entry can be invalidated by.
    pub fn tags(&self) -> &[String] {
        self.tags.as_deref().unwrap_or_default()
    }

    /// The store's invalidation version ([`Store::version`]) read before
    /// the value was read from its origin: an invalidation of one of
    /// [`tags`](Self::tags) that moved the version past it makes the entry
    /// invalid, whatever any clock says. `None` (the default) means the
    /// value is as new as its write: the store records its current version
    /// when it stores the entry.
    ///
    /// [`Store::version`]: crate::store::Store::version
    pub fn version(&self) -> Option<u64> {
        (self.flags & FLAG_VERSIONED != 0).then_some(self.version)
    }

    /// The entry's own stale windows, if it has them.
    fn windows(&self) -> Option<StaleWindows> {
        (self.flags & FLAG_WINDOWS != 0).then_some(self.windows)
    }

    /// How long the load that produced the value took, in milliseconds
    /// (drives probabilistic early refresh).
    pub fn load_ms(&self) -> u32 {
        self.load_ms
    }

    /// The entry's own stale windows (stale-while-revalidate,
    /// stale-if-error) set with [`Entry::with_stale_windows`], if any; an
    /// entry without them is served stale as the policy of the layer that
    /// reads it says.
    pub fn stale_windows(&self) -> Option<(Duration, Duration)> {
        self.windows().map(|w| {
            (
                Duration::from_millis(u64::from(w.revalidate_ms)),
                Duration::from_millis(u64::from(w.if_error_ms)),
            )
        })
    }
}

impl Entry {
    /// An entry stored now, fresh for one minute, with no stale window and no
    /// tags.
    pub fn new(value: impl Into<Bytes>) -> Self {
        let now = clock::now_ms();
        Entry {
            value: value.into(),
            stored_at: now,
            fresh_until: now + 60_000,
            stale_until: now + 60_000,
            tags: None,
            version: 0,
            load_ms: 0,
            windows: StaleWindows::default(),
            flags: 0,
        }
    }

    /// Fresh for `ttl` after `stored_at`; keeps the current stale window
    /// length.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        let stale = self.stale_until.saturating_sub(self.fresh_until);
        self.fresh_until = self.stored_at.saturating_add(clock::ms(ttl));
        self.stale_until = self.fresh_until.saturating_add(stale);
        self
    }

    /// Servable for `window` after it stops being fresh.
    #[must_use]
    pub fn with_stale(mut self, window: Duration) -> Self {
        let own = self.windows().map_or(0, StaleWindows::longest_ms);
        self.stale_until = self.fresh_until.saturating_add(clock::ms(window).max(own));
        self
    }

    /// Gives the entry stale windows of its own, which take the place of
    /// the reading layer's policy (for example those an HTTP origin sent,
    /// RFC 5861): after it stops being fresh, it is served at once while a
    /// background reload runs for `revalidate`, and served when the reload
    /// fails for `if_error`. Both zero: never served stale (HTTP
    /// `must-revalidate`). Each window saturates at `u32::MAX`
    /// milliseconds (49 days). The entry is kept at least as long as the
    /// longer window ([`Entry::stale_until`] moves out if needed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cache::Entry;
    ///
    /// let entry = Entry::new("v")
    ///     .with_ttl(Duration::from_secs(10))
    ///     .with_stale_windows(Duration::from_secs(5), Duration::from_secs(60));
    /// assert_eq!(entry.stale_until() - entry.fresh_until(), 60_000);
    /// ```
    #[must_use]
    pub fn with_stale_windows(mut self, revalidate: Duration, if_error: Duration) -> Self {
        let windows = StaleWindows {
            revalidate_ms: u32::try_from(clock::ms(revalidate)).unwrap_or(u32::MAX),
            if_error_ms: u32::try_from(clock::ms(if_error)).unwrap_or(u32::MAX),
        };
        let longest = self.fresh_until.saturating_add(windows.longest_ms());
        self.stale_until = self.stale_until.max(longest);
        self.windows = windows;
        self.flags |= FLAG_WINDOWS;
        self
    }

    /// Keeps the entry in the store until at least `keep` after it stops
    /// being fresh (moves [`Entry::stale_until`] out), without serving it
    /// stale for longer than its windows say: a loader that can
    /// revalidate (an HTTP conditional request) gets it
    /// ([`Loader::revalidate`](crate::Loader::revalidate)) instead of
    /// loading the whole value again. Give the entry its windows first
    /// ([`Entry::with_stale_windows`]), or the reading layer's policy
    /// decides how long it is served stale.
    #[must_use]
    pub fn with_keep(mut self, keep: Duration) -> Self {
        let kept = self.fresh_until.saturating_add(clock::ms(keep));
        self.stale_until = self.stale_until.max(kept);
        self
    }

    /// Sets the tags the entry can be invalidated by.
    #[must_use]
    pub fn with_tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let tags: Arc<[String]> = tags.into_iter().map(Into::into).collect();
        self.tags = (!tags.is_empty()).then_some(tags);
        self
    }

    /// Sets when the value was read from its origin.
    #[must_use]
    pub fn with_stored_at(mut self, stored_at: u64) -> Self {
        let ttl = self.fresh_until.saturating_sub(self.stored_at);
        let stale = self.stale_until.saturating_sub(self.fresh_until);
        self.stored_at = stored_at;
        self.fresh_until = stored_at.saturating_add(ttl);
        self.stale_until = self.fresh_until.saturating_add(stale);
        self
    }

    /// Records the store's invalidation version read before the value was
    /// read from its origin (see [`Entry::version`]).
    #[must_use]
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self.flags |= FLAG_VERSIONED;
        self
    }

    /// Sets how long the load that produced the value took.
    #[must_use]
    pub fn with_load_ms(mut self, load_ms: u32) -> Self {
        self.load_ms = load_ms;
        self
    }

    /// Whether the entry is fresh at `now_ms`.
    pub fn is_fresh_at(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until
    }

    /// Whether the entry may still be served (fresh or stale) at `now_ms`:
    /// within its own stale windows when it has them, else before
    /// [`Entry::stale_until`].
    pub fn is_servable_at(&self, now_ms: u64) -> bool {
        let until = match self.windows() {
            Some(w) => self
                .fresh_until
                .saturating_add(w.longest_ms())
                .min(self.stale_until),
            None => self.stale_until,
        };
        now_ms < until
    }

    /// Time left until the entry must be dropped, from `now_ms`; `None` when
    /// it is already past its stale window.
    pub fn remaining_at(&self, now_ms: u64) -> Option<Duration> {
        self.stale_until
            .checked_sub(now_ms)
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    /// Approximate memory footprint in bytes, used to weigh L1 entries.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.value.len()
            + self.tags().iter().map(|t| t.len() + 24).sum::<usize>()
    }

    /// Encodes the entry into its versioned binary envelope, bound to
    /// `key`: [`Entry::decode`] accepts it only under the same key.
    ///
    /// ```
    /// use tower_cache::{Entry, DecodeError};
    ///
    /// let bytes = Entry::new("v").encode("users/15");
    /// assert!(Entry::decode("users/15", bytes.clone()).is_ok());
    /// assert_eq!(Entry::decode("users/73", bytes), Err(DecodeError::WrongKey));
    /// ```
    pub fn encode(&self, key: &str) -> Bytes {
        let tags = self.tags();
        let tags_len: usize = tags.iter().map(|t| 2 + t.len()).sum();
        let mut buf = BytesMut::with_capacity(
            HEADER_LEN + 8 + tags_len + 4 + self.value.len() + CHECKSUM_LEN,
        );
        buf.put_slice(&MAGIC);
        buf.put_u8(ENVELOPE_VERSION);
        buf.put_u8(self.flags);
        buf.put_u64(key_hash(key));
        buf.put_u64(self.stored_at);
        buf.put_u64(self.fresh_until);
        buf.put_u64(self.stale_until);
        buf.put_u64(self.version);
        buf.put_u32(self.load_ms);
        if let Some(w) = self.windows() {
            buf.put_u32(w.revalidate_ms);
            buf.put_u32(w.if_error_ms);
        }
        buf.put_u16(u16_len(tags.len()));
        for tag in tags.iter().take(usize::from(u16::MAX)) {
            let len = u16_len(tag.len());
            buf.put_u16(len);
            buf.put_slice(&tag.as_bytes()[..usize::from(len)]);
        }
        let len = u32_len(self.value.len());
        buf.put_u32(len);
        buf.put_slice(&self.value[..len as usize]);
        let checksum = xxh3_64(&buf);
        buf.put_u64(checksum);
        buf.freeze()
    }

    /// Decodes an envelope that [`Entry::encode`] wrote under `key`.
    ///
    /// The payload shares `bytes`' buffer instead of being copied. Nothing
    /// is allocated from a count before it is checked against the bytes
    /// that remain.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for anything that is not exactly an envelope
    /// written under `key` by this version.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the payload shares the buffer: the caller hands it over"
    )]
    pub fn decode(key: &str, bytes: Bytes) -> Result<Entry, DecodeError> {
        if bytes.get(..2) != Some(&MAGIC[..]) {
            return Err(DecodeError::BadMagic);
        }
        match bytes.get(2) {
            Some(&ENVELOPE_VERSION) => {}
            Some(&version) => return Err(DecodeError::UnknownVersion(version)),
            None => return Err(DecodeError::Truncated),
        }
        let Some(body_len) = bytes.len().checked_sub(CHECKSUM_LEN).filter(|n| *n >= 3) else {
            return Err(DecodeError::Truncated);
        };
        let (body, checksum) = bytes.split_at(body_len);
        if xxh3_64(body).to_be_bytes() != checksum {
            return Err(DecodeError::Checksum);
        }
        let mut r = Reader { buf: body, pos: 3 };
        let flags = r.u8()?;
        if flags & !(FLAG_VERSIONED | FLAG_WINDOWS) != 0 {
            return Err(DecodeError::BadFlags);
        }
        if r.u64()? != key_hash(key) {
            return Err(DecodeError::WrongKey);
        }
        let stored_at = r.u64()?;
        let fresh_until = r.u64()?;
        let stale_until = r.u64()?;
        let version = match (flags & FLAG_VERSIONED != 0, r.u64()?) {
            (true, version) => version,
            (false, 0) => 0,
            // One spelling per entry: no version is written as zero.
            (false, _) => return Err(DecodeError::BadFlags),
        };
        let load_ms = r.u32()?;
        if fresh_until < stored_at || stale_until < fresh_until {
            return Err(DecodeError::BadTimestamps);
        }
        let windows = if flags & FLAG_WINDOWS == 0 {
            StaleWindows::default()
        } else {
            let windows = StaleWindows {
                revalidate_ms: r.u32()?,
                if_error_ms: r.u32()?,
            };
            let longest = windows.longest_ms();
            if fresh_until
                .checked_add(longest)
                .is_none_or(|end| end > stale_until)
            {
                return Err(DecodeError::BadTimestamps);
            }
            windows
        };
        let count = r.u16()? as usize;
        // Each tag takes at least its 2-byte length.
        if count * 2 > r.remaining() {
            return Err(DecodeError::Truncated);
        }
        let mut tag = || -> Result<String, DecodeError> {
            let len = r.u16()? as usize;
            let raw = r.take(len)?;
            let tag = std::str::from_utf8(raw).map_err(|_| DecodeError::BadTag)?;
            Ok(tag.to_owned())
        };
        let tags: Option<Arc<[String]>> = match count {
            0 => None,
            // The common cases, one allocation for the list: no vector
            // built to be copied.
            1 => Some(Arc::new([tag()?])),
            2 => Some(Arc::new([tag()?, tag()?])),
            _ => Some((0..count).map(|_| tag()).collect::<Result<_, _>>()?),
        };
        let len = r.u32()? as usize;
        let start = r.pos;
        r.take(len)?;
        if r.pos != body.len() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Entry {
            value: bytes.slice(start..start + len),
            stored_at,
            fresh_until,
            stale_until,
            tags,
            version,
            load_ms,
            windows,
            flags,
        })
    }
}

/// Why bytes read from a store are not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not start with the envelope's magic.
    #[error("not a tower-cache entry (bad magic)")]
    BadMagic,
    /// The envelope was written by an unknown (newer) version.
    #[error("unknown entry envelope version {0}")]
    UnknownVersion(u8),
    /// The envelope ends before its declared length.
    #[error("entry envelope is truncated")]
    Truncated,
    /// The envelope has bytes after its payload.
    #[error("entry envelope has trailing bytes")]
    TrailingBytes,
    /// The timestamps are out of order.
    #[error("entry envelope has inconsistent timestamps")]
    BadTimestamps,
    /// The flags hold a bit this version does not know, or disagree with
    /// the fields they describe.
    #[error("entry envelope has unknown or inconsistent flags")]
    BadFlags,
    /// A tag is not valid UTF-8.
    #[error("entry envelope has a tag that is not UTF-8")]
    BadTag,
    /// The bytes are not those the envelope was written with.
    #[error("entry envelope fails its checksum")]
    Checksum,
    /// The envelope was written under another key.
    #[error("entry envelope was written under another key")]
    WrongKey,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "tc:e:users/15";

    fn sample() -> Entry {
        Entry::new(Bytes::from_static(b"payload"))
            .with_ttl(Duration::from_secs(10))
            .with_stale(Duration::from_secs(5))
            .with_tags(["a", "product:1"])
    }

    #[test]
    fn stale_windows_and_keep_round_trip() {
        let e = sample()
            .with_stale_windows(Duration::from_secs(2), Duration::from_secs(30))
            .with_keep(Duration::from_secs(600))
            .with_version(7);
        assert_eq!(e.stale_until() - e.fresh_until(), 600_000);
        assert!(e.is_servable_at(e.fresh_until() + 29_999));
        assert!(!e.is_servable_at(e.fresh_until() + 30_000));
        let bytes = e.encode(KEY);
        assert_eq!(Entry::decode(KEY, bytes.clone()), Ok(e.clone()));
        assert_eq!(
            Entry::decode(KEY, bytes).unwrap().encode(KEY),
            e.encode(KEY)
        );
    }

    #[test]
    fn envelope_round_trips() {
        let e = sample();
        let decoded = Entry::decode(KEY, e.encode(KEY)).expect("valid envelope");
        assert_eq!(decoded, e);
    }

    #[test]
    fn the_invalidation_version_round_trips_recorded_or_not() {
        for e in [
            sample(),
            sample().with_version(0),
            sample().with_version(u64::MAX),
        ] {
            let decoded = Entry::decode(KEY, e.encode(KEY)).expect("valid envelope");
            assert_eq!(decoded.version(), e.version());
        }
    }

    #[test]
    fn unknown_flags_are_rejected() {
        let mut raw = sample().encode(KEY).to_vec();
        raw[3] |= 0x80;
        let body = raw.len() - CHECKSUM_LEN;
        let checksum = xxh3_64(&raw[..body]).to_be_bytes();
        raw[body..].copy_from_slice(&checksum);
        assert_eq!(
            Entry::decode(KEY, Bytes::from(raw)),
            Err(DecodeError::BadFlags)
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = sample().encode(KEY);
        for len in 0..bytes.len() {
            assert!(
                Entry::decode(KEY, bytes.slice(..len)).is_err(),
                "prefix of {len} accepted"
            );
        }
    }

    #[test]
    fn garbage_other_versions_and_trailing_bytes_are_rejected() {
        assert_eq!(
            Entry::decode(KEY, Bytes::from_static(b"hello world, not an entry")),
            Err(DecodeError::BadMagic)
        );
        let mut v = sample().encode(KEY).to_vec();
        v[2] = 99;
        assert_eq!(
            Entry::decode(KEY, Bytes::from(v)),
            Err(DecodeError::UnknownVersion(99))
        );
        let mut v = sample().encode(KEY).to_vec();
        v[2] = 1;
        assert_eq!(
            Entry::decode(KEY, Bytes::from(v)),
            Err(DecodeError::UnknownVersion(1)),
            "entries of the previous format are misses"
        );
        let mut v = sample().encode(KEY).to_vec();
        v.push(0);
        assert_eq!(
            Entry::decode(KEY, Bytes::from(v)),
            Err(DecodeError::Checksum)
        );
        let mut v = sample().encode(KEY).to_vec();
        let end = v.len() - CHECKSUM_LEN;
        v.insert(end, 0);
        let checksum = xxh3_64(&v[..=end]);
        v[end + 1..].copy_from_slice(&checksum.to_be_bytes());
        assert_eq!(
            Entry::decode(KEY, Bytes::from(v)),
            Err(DecodeError::TrailingBytes)
        );
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = sample().encode(KEY);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut v = bytes.to_vec();
                v[i] ^= 1 << bit;
                assert!(
                    Entry::decode(KEY, Bytes::from(v)).is_err(),
                    "bit {bit} of byte {i} flipped and accepted"
                );
            }
        }
    }

    #[test]
    fn another_keys_entry_is_rejected() {
        let bytes = sample().encode("tc:e:users/73");
        assert_eq!(Entry::decode(KEY, bytes), Err(DecodeError::WrongKey));
    }

    #[test]
    fn counts_beyond_the_input_are_rejected_before_allocating() {
        // A header whose tag count claims far more tags than bytes follow,
        // with a valid checksum: rejected as truncated.
        let mut v = Entry::new("").encode(KEY).to_vec();
        let count_at = HEADER_LEN - 2;
        v[count_at..count_at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        let end = v.len() - CHECKSUM_LEN;
        let checksum = xxh3_64(&v[..end]);
        v[end..].copy_from_slice(&checksum.to_be_bytes());
        assert_eq!(
            Entry::decode(KEY, Bytes::from(v)),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn decoded_payload_shares_the_buffer() {
        let bytes = sample().encode(KEY);
        let decoded = Entry::decode(KEY, bytes.clone()).expect("valid");
        let range = bytes.as_ptr_range();
        assert!(range.contains(&decoded.value.as_ptr()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = Entry::decode(KEY, Bytes::from(bytes));
            }

            #[test]
            fn what_is_encoded_decodes_under_its_key_only(
                value in proptest::collection::vec(any::<u8>(), 0..64),
                tags in proptest::collection::vec("[a-z:0-9]{0,8}", 0..4),
                key in "[a-z/]{0,8}",
                other in "[a-z/]{0,8}",
            ) {
                let entry = Entry::new(value).with_tags(tags);
                let bytes = entry.encode(&key);
                prop_assert_eq!(Entry::decode(&key, bytes.clone()), Ok(entry));
                if other != key {
                    prop_assert_eq!(Entry::decode(&other, bytes), Err(DecodeError::WrongKey));
                }
            }
        }
    }
}
