//! Fuzzes the relationship-field parser and version ordering: no panics,
//! formatted relations re-parse to the same value, and version comparison
//! is a consistent total order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(groups) = debian::relation::parse_relations(text) {
        for group in &groups {
            let printed = debian::relation::group_to_string(group);
            let again = debian::relation::parse_relations(&printed)
                .unwrap_or_else(|e| panic!("{printed:?} does not re-parse: {e}"));
            assert_eq!(again.len(), 1);
            assert_eq!(&again[0], group);
        }
    }
    // Versions: split the input in three and check order properties.
    let parts: Vec<&str> = text.splitn(3, '\n').collect();
    let versions: Vec<debian::Version> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    for a in &versions {
        assert_eq!(a.cmp(a), std::cmp::Ordering::Equal);
        let reparsed: debian::Version = a.to_string().parse().expect("display re-parses");
        assert_eq!(&reparsed, a);
        for b in &versions {
            assert_eq!(a.cmp(b), b.cmp(a).reverse());
            for c in &versions {
                if a <= b && b <= c {
                    assert!(a <= c, "transitivity {a} {b} {c}");
                }
            }
        }
    }
});
