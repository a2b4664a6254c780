//! Limits on what a new message may carry, chosen so that everything the broker later does with
//! it still fits the record format: a retry or DLQ copy adds properties, a delivery adds timer
//! properties, and the format holds at most 65,535 bytes of encoded properties. A message over a
//! limit is refused on send, up front, with a client error: once stored, a message must always
//! be able to leave (be delivered, retried and dead-lettered).

use crate::store::record::Record;

/// Most bytes of encoded properties a new message may have (RocketMQ broker: the properties of
/// a stored message fit in a signed short, 32,767). Leaves 32 KiB for what the broker adds.
pub const MAX_PROPERTIES_BYTES: usize = 32 * 1024;

/// Longest consumer group name, characters: `%RETRY%<group>` must be a legal topic name
/// ([`crate::topics::TOPIC_MAX_LEN`], 127) and `%DLQ%<group>` a legal directory name. RocketMQ
/// allows 255 (`Validators.CHARACTER_MAX_LENGTH`) and its longer retry topics then need its v2
/// record format; Ferrocket refuses such groups instead (the operator's CRD says 120 too).
pub const GROUP_MAX_LEN: usize = crate::topics::TOPIC_MAX_LEN - crate::consume::groups::RETRY_PREFIX.len();

/// Size of `rec`'s properties as the record format encodes them (`name\x01value\x02` each),
/// bytes, computed without encoding them.
pub fn properties_bytes(rec: &Record) -> usize {
    rec.properties.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
}

/// Jump consistent hash of `key` over `buckets` (Guava `Hashing.consistentHash`, which RocketMQ's
/// proxy uses to pick the queue of a message group): the same key always lands in the same
/// bucket, and growing `buckets` moves only the keys the new buckets take. `buckets` must be > 0.
pub fn consistent_hash(key: i64, buckets: u32) -> u32 {
    let mut state = key as u64;
    let mut candidate: i64 = 0;
    loop {
        // Guava's LinearCongruentialGenerator.nextDouble.
        state = state.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let next_double = (((state >> 33) as i32) as f64 + 1.0) / (1u64 << 31) as f64;
        let next = ((candidate + 1) as f64 / next_double) as i64;
        if next >= 0 && next < buckets as i64 {
            candidate = next;
        } else {
            return candidate as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::consume_queue::java_string_hash;

    #[test]
    fn consistent_hash_matches_guava() {
        // (input, consistentHash(input, 8), consistentHash(input, 100)) as Guava 33.2.1 computes them.
        let guava: [(i64, u32, u32); 8] = [
            (0, 0, 0),
            (1, 6, 55),
            (4, 1, 45),
            (-1, 7, 92),
            (123_456_789, 7, 34),
            (java_string_hash("group-a") as i64, 7, 22),
            (java_string_hash("order-7") as i64, 4, 89),
            (i64::MIN, 5, 84),
        ];
        for (key, eight, hundred) in guava {
            assert_eq!((consistent_hash(key, 8), consistent_hash(key, 100)), (eight, hundred), "key {key}");
        }
        assert_eq!((java_string_hash("group-a"), java_string_hash("order-7")), (293_427_347, -1_207_111_304));
        // Growing the buckets moves a key only to a new bucket.
        for key in 0..1000i64 {
            let (a, b) = (consistent_hash(key, 8), consistent_hash(key, 9));
            assert!(a == b || b == 8, "key {key}: {a} -> {b}");
        }
    }

    #[test]
    fn group_names_leave_room_for_the_retry_prefix() {
        assert_eq!(GROUP_MAX_LEN, 120);
        assert_eq!(java_string_hash("TagA"), 2_598_919);
    }
}
