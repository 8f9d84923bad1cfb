//! The EFI system partition as an in-memory FAT image (built with `fatfs`,
//! no mounts). Every timestamp is SOURCE_DATE_EPOCH and the volume serial
//! comes from the image seed, so the same inputs give the same bytes.

use std::io::{Cursor, Write};

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};

/// FAT volume label of the ESP.
pub const VOLUME_LABEL: [u8; 11] = *b"KUBEBOOT   ";

/// Errors building the ESP.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    /// fatfs failed formatting or writing.
    #[error("FAT image: {what} `{path}`: {source}")]
    Fat {
        /// The operation.
        what: &'static str,
        /// The path inside the ESP.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One file to put into the ESP (path with `/`, no leading slash).
#[derive(Debug, Clone)]
pub struct EspFile {
    /// Path inside the ESP, for example `kubeboot/a/vmlinuz`.
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
}

/// A fixed clock for fatfs.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// Civil date and time (UTC) of a Unix time; FAT cannot hold years before
/// 1980, so earlier times clamp to 1980-01-01 00:00:00.
pub fn fat_datetime(epoch: u64) -> DateTime {
    // Howard Hinnant's days-to-civil algorithm (public domain).
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    if y < 1980 {
        return DateTime {
            date: Date {
                year: 1980,
                month: 1,
                day: 1,
            },
            time: Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        };
    }
    DateTime {
        date: Date {
            year: y as u16,
            month: m as u16,
            day: d as u16,
        },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

/// Builds a FAT image of `size` bytes holding `files`, with volume serial
/// `volume_id`, all timestamps at `epoch`, and the BPB's hidden-sectors
/// field set to `hidden_sectors` (the partition's first LBA, which the
/// syslinux boot sector adds to find its files when booted by BIOS).
pub fn build(
    size: u64,
    files: &[EspFile],
    volume_id: u32,
    epoch: u64,
    hidden_sectors: u32,
) -> Result<Vec<u8>, EspError> {
    let fat = |what: &'static str, path: &str| {
        let path = path.to_owned();
        move |source| EspError::Fat { what, path, source }
    };
    let mut buf = vec![0u8; size as usize];
    fatfs::format_volume(
        Cursor::new(&mut buf[..]),
        FormatVolumeOptions::new()
            .volume_id(volume_id)
            .volume_label(VOLUME_LABEL),
    )
    .map_err(fat("formatting", "/"))?;
    {
        // fatfs wants a &'static clock; one small leak per image build.
        let clock: &'static FixedTime = Box::leak(Box::new(FixedTime(fat_datetime(epoch))));
        let fs = FileSystem::new(
            Cursor::new(&mut buf[..]),
            FsOptions::new().time_provider(clock),
        )
        .map_err(fat("opening", "/"))?;
        let mut sorted: Vec<&EspFile> = files.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        for f in sorted {
            let root = fs.root_dir();
            let mut dir = root.clone();
            let parts: Vec<&str> = f.path.split('/').filter(|p| !p.is_empty()).collect();
            let Some((name, dirs)) = parts.split_last() else {
                continue;
            };
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(existing) => existing,
                    Err(_) => dir.create_dir(d).map_err(fat("creating directory", d))?,
                };
            }
            let mut file = dir.create_file(name).map_err(fat("creating", &f.path))?;
            file.truncate().map_err(fat("truncating", &f.path))?;
            file.write_all(&f.data).map_err(fat("writing", &f.path))?;
            file.flush().map_err(fat("writing", &f.path))?;
        }
        fs.unmount().map_err(fat("closing", "/"))?;
    }
    set_hidden_sectors(&mut buf, hidden_sectors);
    Ok(buf)
}

/// Sets BPB_HiddSec (offset 0x1C) in the boot sector and, on FAT32, in the
/// backup boot sector too (BPB_BkBootSec, offset 0x32).
fn set_hidden_sectors(buf: &mut [u8], hidden: u32) {
    buf[0x1C..0x20].copy_from_slice(&hidden.to_le_bytes());
    let fat_size_16 = u16::from_le_bytes([buf[0x16], buf[0x17]]);
    if fat_size_16 == 0 {
        let backup = u16::from_le_bytes([buf[0x32], buf[0x33]]) as usize;
        if backup != 0 && backup != 0xFFFF {
            let at = backup * 512 + 0x1C;
            if at + 4 <= buf.len() {
                buf[at..at + 4].copy_from_slice(&hidden.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn files() -> Vec<EspFile> {
        vec![
            EspFile {
                path: "kubeboot/a/vmlinuz".into(),
                data: vec![7u8; 300_000],
            },
            EspFile {
                path: "loader/loader.conf".into(),
                data: b"default kubeboot-a.conf\n".to_vec(),
            },
        ]
    }

    #[test]
    fn dates() {
        let d = fat_datetime(1_704_067_200); // 2024-01-01T00:00:00Z
        assert_eq!((d.date.year, d.date.month, d.date.day), (2024, 1, 1));
        let d = fat_datetime(951_825_601); // 2000-02-29T12:00:01Z
        assert_eq!((d.date.year, d.date.month, d.date.day), (2000, 2, 29));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (12, 0, 1));
        assert_eq!(fat_datetime(0).date.year, 1980);
    }

    #[test]
    fn contents_read_back_with_fixed_ids_and_times() {
        let img = build(64 << 20, &files(), 0xDEAD_BEEF, 1_704_067_200, 2048).unwrap();
        assert_eq!(&img[0x1C..0x20], &2048u32.to_le_bytes());
        let fs = FileSystem::new(Cursor::new(img.clone()), FsOptions::new()).unwrap();
        assert_eq!(fs.volume_id(), 0xDEAD_BEEF);
        assert_eq!(fs.volume_label(), "KUBEBOOT");
        let mut data = Vec::new();
        let mut f = fs.root_dir().open_file("kubeboot/a/vmlinuz").unwrap();
        f.read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![7u8; 300_000]);
        let entry = fs
            .root_dir()
            .open_dir("loader")
            .unwrap()
            .iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == "loader.conf")
            .unwrap();
        assert_eq!(entry.modified().date.year, 2024);
        assert_eq!(entry.created().date.year, 2024);
    }

    #[test]
    fn deterministic() {
        let a = build(64 << 20, &files(), 1, 1_704_067_200, 2048).unwrap();
        let mut rev = files();
        rev.reverse();
        let b = build(64 << 20, &rev, 1, 1_704_067_200, 2048).unwrap();
        assert!(a == b, "same files in another order gave other bytes");
        let c = build(64 << 20, &files(), 2, 1_704_067_200, 2048).unwrap();
        assert!(a != c);
    }
}
