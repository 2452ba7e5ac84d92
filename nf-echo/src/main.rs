//! nf-echo: the echo network function.
#![forbid(unsafe_code)]
fn main() {}
