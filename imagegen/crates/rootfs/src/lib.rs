//! Rootless root filesystem assembly from .deb files, and the cpio initramfs writer (skeleton).
