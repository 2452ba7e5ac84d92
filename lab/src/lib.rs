//! Lab harness: network namespaces, veth pairs, processes and traffic for tests and benchmarks.
#![forbid(unsafe_code)]
