//! Fuzzes the deb822 parser and everything built on it: `Packages`
//! stanzas, `Release` files and apt `.sources` files. None may panic; a
//! parsed index must answer lookups consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(paragraphs) = debian::control::parse(text) {
        for p in &paragraphs {
            assert!(p.line >= 1);
            for (name, _) in p.fields() {
                assert!(p.get(name).is_some());
            }
        }
    }
    if let Ok(index) = debian::PackageIndex::parse(text, "amd64", "fuzz") {
        for name in index.names() {
            let versions = index.versions(name);
            assert!(!versions.is_empty());
            assert!(versions.windows(2).all(|w| w[0].version >= w[1].version));
            for p in versions {
                for prov in &p.provides {
                    assert!(index.providers(&prov.name).any(|q| q.name == p.name));
                }
            }
        }
        let request: Vec<String> = index.names().take(3).map(str::to_string).collect();
        let _ = debian::resolve(&index, &request, &[]);
    }
    if let Ok(release) = debian::release::Release::parse(text, "fuzz") {
        let _ = release.packages_file("main", "amd64");
    }
    let _ = debian::sources::parse_deb822(text);
    let _ = debian::sources::parse_one_line(text);
    let _ = debian::Lockfile::parse(text, "fuzz");
});
