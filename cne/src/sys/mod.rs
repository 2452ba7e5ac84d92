//! Small wrappers over the host: network devices ([`netdev`]) and capabilities ([`privs`]).

pub mod netdev;
#[allow(unsafe_code)]
pub mod privs;
