//! CNDP's JSON-C configuration.
