//! Zero-copy header views.
#![forbid(unsafe_code)]
