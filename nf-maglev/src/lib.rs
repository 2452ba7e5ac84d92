//! nf-maglev: Maglev L4 load balancer over AF_XDP.
#![forbid(unsafe_code)]
