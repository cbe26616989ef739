//! manifestr: render Jinja2-templated Kubernetes manifests with layered values.
//!
//! `manifestr render PATH... [-f values.yaml]... [--set k=v]... [-o DIR]`;
//! see `manifestr --help` for the whole tool.

pub mod chart;
pub mod cli;
pub mod error;
pub mod functions;
pub mod lint;
pub mod package;
pub mod render;
pub mod values;

pub use error::{Error, Result};
