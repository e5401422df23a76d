//! Sticky buckets (docs/guide/buckets.md):
//! with `[routing] assignment = "bucket"` a client holds a bucket
//! `0..BUCKETS` (cookie `x-ms-routing-name=b.<n>`, or the hash of its user
//! key) instead of a slot name, and the slots of a site own contiguous
//! bucket ranges laid out in a fixed order (the routing order: by slot
//! name). Raising a slot's share therefore extends its range at the top
//! edge — every client it had keeps it and exactly the new share moves —
//! and lowering it moves only the clients above the new edge.
//!
//! Everything here is pure and allocation-free per request.

/// Buckets per site: one per basis point (the table's `WEIGHT_SCALE`, held
/// equal to it where the table is compiled), so every rule maps to a whole
/// number of buckets and a bucket is a share of 0.01%. Defined here, not
/// taken from `table`, so that imports go one way: `table` uses
/// `buckets`, never the reverse.
pub const BUCKETS: u32 = 10_000;

/// What a bucket cookie value starts with (`b.` then the decimal bucket).
pub const BUCKET_PREFIX: &[u8] = b"b.";

/// The contiguous bucket ranges of the slots of a site: `shares` are
/// (slot index, basis points) in the fixed layout order; the answer is each
/// slot's exclusive upper edge, cumulated, capped at [`BUCKETS`]. Slots
/// with a zero share own no buckets. Buckets past the last edge belong to
/// production.
pub fn bucket_ranges(shares: &[(u16, u32)]) -> Vec<(u32, u16)> {
    let mut out = Vec::with_capacity(shares.len());
    let mut edge = 0u32;
    for &(slot, bp) in shares {
        if bp == 0 {
            continue;
        }
        edge = (edge + bp).min(BUCKETS);
        out.push((edge, slot));
    }
    out
}

/// The slot owning `bucket` by `ranges` (`None`: production's rest).
pub fn slot_of_bucket(ranges: &[(u32, u16)], bucket: u32) -> Option<u16> {
    ranges
        .iter()
        .find(|&&(upper, _)| bucket < upper)
        .map(|&(_, slot)| slot)
}

/// Parse a bucket cookie value `b.<0..9999>`; `None` for anything else
/// (garbage, out of range, leading `+`, more than 4 digits, a slot name).
pub fn parse_bucket(v: &[u8]) -> Option<u32> {
    let digits = v.strip_prefix(BUCKET_PREFIX)?;
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    (n < BUCKETS).then_some(n)
}

/// The bucket of user key `key` on site `site`: the same on every node and
/// every release, so it must never change. FNV-1a (64 bit) over the site
/// name, a 0 byte and the key, then the SplitMix64 finalizer (FNV alone
/// leaves sequential ids like `user-1`, `user-2` clustered in the low
/// bits), modulo [`BUCKETS`].
pub fn key_bucket(key: &[u8], site: &str) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in site.as_bytes().iter().chain(&[0u8]).chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    // SplitMix64 finalizer
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % u64::from(BUCKETS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn ranges_are_contiguous_in_the_given_order() {
        let r = bucket_ranges(&[(2, 1000), (1, 0), (3, 2500)]);
        assert_eq!(r, vec![(1000, 2), (3500, 3)]);
        assert_eq!(slot_of_bucket(&r, 0), Some(2));
        assert_eq!(slot_of_bucket(&r, 999), Some(2));
        assert_eq!(slot_of_bucket(&r, 1000), Some(3));
        assert_eq!(slot_of_bucket(&r, 3499), Some(3));
        assert_eq!(slot_of_bucket(&r, 3500), None);
        assert_eq!(slot_of_bucket(&r, BUCKETS - 1), None);
        assert_eq!(bucket_ranges(&[(1, 12_000)]), vec![(BUCKETS, 1)]);
    }

    #[test]
    fn bucket_cookies_parse_strictly() {
        assert_eq!(parse_bucket(b"b.0"), Some(0));
        assert_eq!(parse_bucket(b"b.9999"), Some(9999));
        assert_eq!(parse_bucket(b"b.0042"), Some(42));
        for bad in [
            &b"b.10000"[..],
            b"b.",
            b"b.-1",
            b"b.+1",
            b"b.12a",
            b"b.99999",
            b"B.1",
            b"staging",
            b"",
            b"b.1 ",
        ] {
            assert_eq!(
                parse_bucket(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn key_buckets_are_fixed_and_spread() {
        // pinned values: a change here would move every keyed user
        let pinned = [
            key_bucket(b"alice", "shop"),
            key_bucket(b"bob", "shop"),
            key_bucket(b"alice", "blog"),
        ];
        assert_eq!(pinned, PINNED, "the user-key hash changed");
        assert_ne!(pinned[0], pinned[2], "the site is part of the hash");
        // sequential ids spread evenly over ten deciles
        let mut deciles = [0u32; 10];
        for i in 0..100_000 {
            deciles[(key_bucket(format!("user-{i}").as_bytes(), "shop") / 1000) as usize] += 1;
        }
        for d in deciles {
            assert!((9_500..10_500).contains(&d), "{deciles:?}");
        }
    }
    // computed by an independent implementation (Python) of the same steps
    const PINNED: [u32; 3] = [4162, 2568, 6458];

    /// Property: for random layouts and a random change of one slot's
    /// share, a bucket changes owner only if it lies between the old and
    /// the new edge of that slot's range — raising moves no client off the
    /// slot, lowering moves only those above the new edge — when the slot
    /// is the last one in the layout (the one a ramp moves, or any slot of
    /// a site with one non-production slot). For a slot with others after
    /// it, its own clients still never move; the later ranges shift.
    #[test]
    fn changing_a_share_moves_only_the_buckets_between_the_edges() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xb0c4e7);
        for _ in 0..2_000 {
            let n = rng.random_range(1..5u16);
            let mut shares: Vec<(u16, u32)> = Vec::new();
            let mut left = BUCKETS;
            for slot in 1..=n {
                let bp = rng.random_range(0..=left / 2);
                left -= bp;
                shares.push((slot, bp));
            }
            let before = bucket_ranges(&shares);
            let changed = rng.random_range(0..shares.len());
            let old_bp = shares[changed].1;
            let others: u32 = shares.iter().map(|s| s.1).sum::<u32>() - old_bp;
            let new_bp = rng.random_range(0..=BUCKETS - others);
            shares[changed].1 = new_bp;
            let after = bucket_ranges(&shares);
            let slot = shares[changed].0;
            let start: u32 = shares[..changed].iter().map(|s| s.1).sum();
            let is_last = shares[changed + 1..].iter().all(|s| s.1 == 0);
            for b in 0..BUCKETS {
                let (was, now) = (slot_of_bucket(&before, b), slot_of_bucket(&after, b));
                if was == Some(slot) && new_bp >= old_bp {
                    assert_eq!(now, Some(slot), "raising moved bucket {b} off the slot");
                }
                if was == Some(slot) && now != Some(slot) {
                    assert!(
                        b >= start + new_bp,
                        "lowering moved bucket {b} below the edge"
                    );
                }
                if is_last && was != now {
                    let (lo, hi) = (start + old_bp.min(new_bp), start + old_bp.max(new_bp));
                    assert!(
                        (lo..hi).contains(&b),
                        "bucket {b} moved outside {lo}..{hi} ({shares:?})"
                    );
                }
            }
        }
    }
}
