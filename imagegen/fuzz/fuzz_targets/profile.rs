//! Profiles are user input: parsing, merging and validating any text must
//! return a value or a located error, never panic.
#![no_main]

use std::path::{Path, PathBuf};

use profile::{ChainFile, Profile, ProfileSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = ProfileSpec::parse(Path::new("fuzz.toml"), text) else {
        return;
    };
    let file = ChainFile {
        path: PathBuf::from("fuzz.toml"),
        text: text.to_owned(),
        spec,
    };
    // A chain of the same file twice exercises every merge rule.
    let _ = Profile::from_chain(&[file.clone(), file]);
});
