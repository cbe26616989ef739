//! The storage conformance suite (being built).
