//! nf-echo: the echo network function. [`echo`] holds its packet logic, written against
//! [`cne::frame::Frame`] so that fixtures drive it without sockets; the binary adds the CLI, the
//! AF_XDP ports and the worker threads.
#![forbid(unsafe_code)]

pub mod echo;
