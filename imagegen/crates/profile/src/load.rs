//! Reading a profile and its `extends` chain from disk ([`load`]): the one
//! module of the crate that does I/O, bounded by [`MAX_EXTENDS_DEPTH`] and
//! [`MAX_PROFILE_BYTES`].

use std::path::{Path, PathBuf};

use crate::error::{locate_key, Location, ProfileError};
use crate::profile::{ChainFile, Profile};
use crate::spec::ProfileSpec;

/// The most files an `extends` chain may hold, the leaf included.
pub const MAX_EXTENDS_DEPTH: usize = 8;
/// The largest profile file read (profiles are a few KiB; this bounds what
/// a mistaken `extends` can make imagegen read).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Reads one profile file: a regular file (a device such as `/dev/zero`,
/// a FIFO or a directory is refused before it is opened) of at most
/// [`MAX_PROFILE_BYTES`], UTF-8. The error is the reason, for the caller to
/// place.
fn read_profile_text(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Err("is a directory, not a profile file".into());
    }
    if !meta.is_file() {
        return Err("is not a regular file (a device, FIFO or socket), not a profile".into());
    }
    let too_large =
        || format!("is larger than {MAX_PROFILE_BYTES} bytes, the most a profile may be");
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // Bounded again: the file may have grown since it was measured.
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        format!("is not UTF-8 text (line {line})")
    })
}

/// Reads a profile and its `extends` chain from disk, then merges and
/// validates it. Overlay paths come back absolute (resolved against the
/// file that names them). See the module docs for the bounds on `extends`.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let mut chain: Vec<ChainFile> = Vec::new();
    let mut canonicals: Vec<PathBuf> = Vec::new();
    // The next file and, for a parent, the `extends` line that names it.
    let mut next: Option<(PathBuf, Option<Location>)> = Some((path.to_owned(), None));
    while let Some((p, named_at)) = next.take() {
        let fail = |reason: String| match &named_at {
            None => ProfileError::Read {
                path: p.clone(),
                reason,
            },
            Some(location) => ProfileError::Extends {
                location: location.clone(),
                reason,
            },
        };
        // A target that cannot be read: the leaf's own error, or the
        // `extends` line naming it.
        let unreadable = |reason: String| match named_at {
            None => fail(reason),
            Some(_) => fail(format!("extends {}: {reason}", p.display())),
        };
        let canonical = p.canonicalize().map_err(|e| unreadable(e.to_string()))?;
        let names = |extra: &Path| {
            chain
                .iter()
                .map(|f| f.path.display().to_string())
                .chain([extra.display().to_string()])
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        if canonicals.contains(&canonical) {
            return Err(fail(format!("extends cycle: {}", names(&p))));
        }
        if chain.len() >= MAX_EXTENDS_DEPTH {
            return Err(fail(format!(
                "the extends chain is longer than {MAX_EXTENDS_DEPTH} files, the most allowed: {}",
                names(&p)
            )));
        }
        let text = read_profile_text(&canonical).map_err(unreadable)?;
        let mut spec = ProfileSpec::parse(&p, &text)?;
        let dir = canonical.parent().unwrap_or(Path::new("/")).to_owned();
        spec.overlays = spec
            .overlays
            .iter()
            .map(|o| dir.join(o).display().to_string())
            .collect();
        if let Some(parent) = &spec.extends {
            let pos = locate_key(&text, &["extends"]);
            next = Some((
                dir.join(parent),
                Some(Location {
                    file: p.clone(),
                    line: pos.map(|x| x.0),
                    column: pos.map(|x| x.1),
                    key: Some("extends".into()),
                }),
            ));
        }
        canonicals.push(canonical);
        chain.push(ChainFile {
            path: p,
            text,
            spec,
        });
    }
    chain.reverse();
    Profile::from_chain(&chain)
}
