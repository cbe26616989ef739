//! The `metrics` target's sources: `prometheus_remote_write` (push, the
//! default path) and `prometheus_federate` (pull, the fallback), sharing one
//! label policy ([`transform`]).

pub mod transform;
