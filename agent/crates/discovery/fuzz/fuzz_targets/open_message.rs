//! Arbitrary datagrams through `open` with a fixed key: it must never
//! panic. The first byte picks a mode:
//!
//! - even: the rest is a raw datagram (an attacker without the secret:
//!   nothing may be accepted unless it carries a valid tag, which the
//!   fuzzer cannot forge);
//! - odd: the rest is a body sealed with the right key (a peer holding the
//!   secret but sending garbage), a timestamp offset and a repeat count, so
//!   the time window, the JSON decoder and the replay cache are reached.
//!
//! Whatever is accepted must re-seal and open to the same announcement,
//! and a second delivery of the same datagram must be refused as a replay.
#![no_main]

use std::sync::OnceLock;

use cluster_config::ClusterSecret;
use discovery::{open, seal, seal_body, DiscoveryKeys, Rejected, ReplayGuard};
use libfuzzer_sys::fuzz_target;

const NOW_MS: u64 = 1_800_000_000_000;

fn keys() -> &'static DiscoveryKeys {
    static KEYS: OnceLock<DiscoveryKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let secret = ClusterSecret::new("fuzzing-secret-0123456789").expect("valid secret");
        DiscoveryKeys::derive(&secret, "fuzz")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut guard = ReplayGuard::default();
    let msg = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // Timestamp within about ±65 s of now, to land on both sides of the window.
        let offset = i64::from(i16::from_le_bytes([
            rest.first().copied().unwrap_or(0),
            rest.get(1).copied().unwrap_or(0),
        ])) * 2;
        let ts = NOW_MS.saturating_add_signed(offset);
        seal_body(rest.get(2..).unwrap_or_default(), keys(), ts, [mode; 16])
    };
    match open(&msg, keys(), NOW_MS, &mut guard) {
        Ok(ann) => {
            assert_eq!(
                open(&msg, keys(), NOW_MS, &mut guard),
                Err(Rejected::Replayed)
            );
            let again = seal(&ann, keys(), NOW_MS, [0; 16]);
            assert_eq!(
                open(&again, keys(), NOW_MS, &mut ReplayGuard::default()).ok(),
                Some(ann)
            );
        }
        Err(Rejected::BadMac) => {
            assert_eq!(mode & 1, 0, "a correctly sealed message failed its tag")
        }
        Err(_) => {}
    }
});
