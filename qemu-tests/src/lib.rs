//! QEMU harness (skeleton).
#![warn(missing_docs)]
