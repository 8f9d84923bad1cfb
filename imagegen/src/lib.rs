//! imagegen library (skeleton).
#![warn(missing_docs)]
