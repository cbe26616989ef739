//! Runs a set of tasks (the collector targets) only while leading: started
//! when leadership is gained, cancelled when it is lost, started again (a
//! fresh set, resuming from what the store holds) when it comes back.

use super::Leadership;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why the supervisor stopped before `shutdown`.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("a collector target panicked: {0}")]
    Panicked(String),
}

/// Follows `leadership` until `shutdown`: on `Leading`, `start(term)`
/// spawns the tasks, which must stop when `term` is cancelled; on
/// `Following` (or `shutdown`) `term` is cancelled and the tasks are awaited
/// for up to `stop_grace`, then aborted. `on_change(true/false)` is called
/// after starting and after stopping (the `collector_leader` gauge). A
/// closed channel keeps its last value. A panicking task stops the
/// supervisor with an error (the process restarts; a standby takes over).
pub async fn run_while_leading<S, C>(
    mut leadership: watch::Receiver<Leadership>,
    mut start: S,
    mut on_change: C,
    stop_grace: Duration,
    shutdown: CancellationToken,
) -> Result<(), SuperviseError>
where
    S: FnMut(CancellationToken) -> JoinSet<()>,
    C: FnMut(bool),
{
    let mut closed = false;
    loop {
        // Follow until leading.
        let generation = loop {
            if let Leadership::Leading { generation } = *leadership.borrow_and_update() {
                break generation;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = leadership.changed(), if !closed => closed = r.is_err(),
            }
            if closed && !leadership.borrow().is_leading() {
                shutdown.cancelled().await;
                return Ok(());
            }
        };
        let term = shutdown.child_token();
        let mut tasks = start(term.clone());
        on_change(true);
        tracing::info!(generation, "collector targets started (leading)");
        let mut panicked = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = leadership.changed(), if !closed => {
                    closed = r.is_err();
                    if !leadership.borrow_and_update().is_leading() {
                        break;
                    }
                }
                Some(r) = tasks.join_next() => {
                    if let Err(e) = r {
                        if e.is_panic() {
                            panicked = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }
        term.cancel();
        let drained = tokio::time::timeout(stop_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_ms = u64::try_from(stop_grace.as_millis()).unwrap_or(u64::MAX),
                "collector targets did not stop within the grace; aborting them"
            );
            tasks.shutdown().await;
        }
        on_change(false);
        if let Some(p) = panicked {
            return Err(SuperviseError::Panicked(p));
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        tracing::info!(generation, "collector targets stopped (no longer leading)");
    }
}
