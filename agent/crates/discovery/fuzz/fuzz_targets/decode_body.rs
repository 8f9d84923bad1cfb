//! The body decoder and frame parser on arbitrary bytes (the part `open`
//! reaches only after authentication, fuzzed here without a tag): no
//! panic, and whatever decodes re-encodes to an equal announcement.
#![no_main]

use discovery::{parse_frame, Announcement};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_frame(data);
    if let Ok(ann) = serde_json::from_slice::<Announcement>(data) {
        let text = serde_json::to_vec(&ann).expect("announcements serialise");
        let back: Announcement = serde_json::from_slice(&text).expect("own output parses");
        assert_eq!(back, ann);
    }
});
