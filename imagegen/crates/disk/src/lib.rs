#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod aws;
pub mod boot;
pub mod build;
pub mod convert;
pub mod esp;
pub mod gpt;
pub mod guid;
pub mod layout;
pub mod stamp;

use std::path::PathBuf;

pub use build::{build, Built, Options};
pub use convert::{Format, UnknownFormat};

/// Errors of a disk build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File I/O failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The image manifest is unreadable.
    #[error("image manifest {path}: {detail}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The aws format needs NVMe and ENA drivers in the image.
    #[error("the aws format needs the kernel modules {missing} in the image, but {manifest} does not list them under kernel.modules_kept: add them to the profile's [kernel] modules")]
    AwsModules {
        /// Missing module names.
        missing: String,
        /// The manifest read.
        manifest: PathBuf,
    },
    /// Layout planning failed (disk too small).
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// Building the ESP failed.
    #[error(transparent)]
    Esp(#[from] esp::EspError),
    /// A boot loader is missing or its installer failed.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A converted image's header is not what qemu-img writes.
    #[error("stamping deterministic ids into {path}: {source}")]
    Stamp {
        /// The converted file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: stamp::StampError,
    },
    /// qemu-img is missing or failed.
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
}
