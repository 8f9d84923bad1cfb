#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod cpio;
pub mod deb;
pub mod effects;
pub mod kernel;
pub mod overlay;
pub mod tree;

pub use deb::{DebError, DebInfo, UnpackOptions};
pub use kernel::{Kernel, KernelError};
pub use overlay::{OverlayError, OverlayReport};
pub use tree::{Entry, EntryKind, ExistingDir, Tree, TreeError};
