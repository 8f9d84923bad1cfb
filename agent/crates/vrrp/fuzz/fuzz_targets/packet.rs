//! The receive path on arbitrary bytes: never panics, and whatever it
//! accepts re-encodes to the very same VRRP message.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vrrp::packet::{accept, parse_ipv4, Advert};

fuzz_target!(|data: &[u8]| {
    let vip = Ipv4Addr::new(10, 77, 0, 10);
    let _ = accept(data, 51, vip);
    if let Ok(env) = parse_ipv4(data) {
        if let Ok(advert) = Advert::decode(env.src, env.dst, env.payload) {
            let again = advert.encode(env.src, env.dst);
            // Reserved bits are not kept, so compare after the first 4
            // bits of byte 4 are masked.
            let mut orig = env.payload.to_vec();
            orig[4] &= 0x0f;
            let mut ours = again.clone();
            ours[4] &= 0x0f;
            if env.payload[4] & 0xf0 == 0 {
                assert_eq!(orig, ours);
            }
            assert_eq!(Advert::decode(env.src, env.dst, &again), Ok(advert));
        }
    }
    // The bare VRRP decoder on the same bytes.
    let _ = Advert::decode(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(224, 0, 0, 18), data);
});
