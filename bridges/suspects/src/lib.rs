//! Suspects: which change caused this degradation? Ranked, with evidence.
//!
//! Given a workload showing a symptom at a time, [`query::suspects`] finds
//! when its symptom started (the **onset**, [`onset`]: a robust baseline
//! and a two-sided CUSUM over its error ratio, latency, request rate,
//! error-log rate, restarts, OOM kills, CPU throttling and memory), collects
//! every change in the window before it (the workload's own spec and image
//! changes, the ConfigMaps and Secrets it references, the Services,
//! NetworkPolicies, PDBs and HPAs that select it, the Nodes its pods ran on,
//! Warning events, dependencies that appeared or were lost, new error-log
//! templates, and the same for its neighbours in the topology at that time),
//! and ranks them ([`model`]): time proximity to the onset, graph distance,
//! the measured before/after shift at the changed entity itself, the new
//! against the old ReplicaSet's pods, and a prior per category.
//!
//! Layout: pure modules ([`bins`], [`onset`], [`signals`], [`template`],
//! [`kube`], [`pods`], [`model`]) decide everything and are unit-tested on
//! synthetic series; [`query`] does the bounded store reads through the
//! store traits. The API route and the CLI both call [`query::suspects`].

pub mod bins;
pub mod kube;
pub mod model;
pub mod onset;
pub mod pods;
pub mod query;
pub mod signals;
pub mod template;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use model::{frame, Category, OnsetInfo, Suspect};
pub use query::{
    suspects, Answer, Limits, SuspectsQuery, DEFAULT_WINDOW_MS, MAX_WINDOW_MS, MIN_WINDOW_MS,
};

/// Errors of a suspects query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is wrong; the message names it.
    #[error("{0}")]
    InvalidQuery(String),
    #[error(transparent)]
    Store(#[from] kube_insight_store::Error),
}
