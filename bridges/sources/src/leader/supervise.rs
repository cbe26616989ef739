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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A target that counts its starts and stops.
    fn counting(
        started: Arc<AtomicUsize>,
        stopped: Arc<AtomicUsize>,
    ) -> impl FnMut(CancellationToken) -> JoinSet<()> {
        move |term: CancellationToken| {
            started.fetch_add(1, Ordering::SeqCst);
            let stopped = stopped.clone();
            let mut set = JoinSet::new();
            set.spawn(async move {
                term.cancelled().await;
                stopped.fetch_add(1, Ordering::SeqCst);
            });
            set
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn targets_run_only_while_leading_and_restart_on_each_term() {
        let (tx, rx) = watch::channel(Leadership::Following);
        let (started, stopped) = (Arc::default(), Arc::default());
        let gauge = Arc::new(Mutex::new(Vec::new()));
        let g = gauge.clone();
        let stop = CancellationToken::new();
        let sup = tokio::spawn(run_while_leading(
            rx,
            counting(Arc::clone(&started), Arc::clone(&stopped)),
            move |l| g.lock().unwrap().push(l),
            Duration::from_secs(5),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(started.load(Ordering::SeqCst), 0, "following: nothing runs");
        tx.send(Leadership::Leading { generation: 1 }).unwrap();
        until("started", || started.load(Ordering::SeqCst) == 1).await;
        // A renewal that changes nothing does not restart the targets.
        tx.send(Leadership::Leading { generation: 1 }).unwrap();
        tx.send(Leadership::Following).unwrap();
        until("stopped", || stopped.load(Ordering::SeqCst) == 1).await;
        tx.send(Leadership::Leading { generation: 2 }).unwrap();
        until("restarted", || started.load(Ordering::SeqCst) == 2).await;
        stop.cancel();
        sup.await.unwrap().unwrap();
        assert_eq!(stopped.load(Ordering::SeqCst), 2, "stopped at shutdown");
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(*gauge.lock().unwrap(), [true, false, true, false]);
    }

    #[tokio::test]
    async fn without_a_lease_the_targets_run_until_shutdown() {
        let (started, stopped) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        let stop = CancellationToken::new();
        let sup = tokio::spawn(run_while_leading(
            Leadership::always(),
            counting(started.clone(), Arc::clone(&stopped)),
            |_| {},
            Duration::from_secs(5),
            stop.clone(),
        ));
        until("started", || started.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(stopped.load(Ordering::SeqCst), 0);
        stop.cancel();
        sup.await.unwrap().unwrap();
        assert_eq!(stopped.load(Ordering::SeqCst), 1);
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stuck_target_is_aborted_and_a_panic_stops_the_supervisor() {
        let (tx, rx) = watch::channel(Leadership::Leading { generation: 0 });
        let stop = CancellationToken::new();
        let gauge = Arc::new(Mutex::new(Vec::new()));
        let g = gauge.clone();
        let sup = tokio::spawn(run_while_leading(
            rx,
            |_term: CancellationToken| {
                let mut set = JoinSet::new();
                // Ignores its token: aborted after the grace.
                set.spawn(std::future::pending::<()>());
                set
            },
            move |l| g.lock().unwrap().push(l),
            Duration::from_millis(50),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(Leadership::Following).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!sup.is_finished(), "following again, not stopped");
        assert_eq!(
            *gauge.lock().unwrap(),
            [true, false],
            "aborted after the grace"
        );
        stop.cancel();
        sup.await.unwrap().unwrap();

        let (_tx, rx) = watch::channel(Leadership::Leading { generation: 0 });
        let r = run_while_leading(
            rx,
            |_term: CancellationToken| {
                let mut set = JoinSet::new();
                set.spawn(async { panic!("boom") });
                set
            },
            |_| {},
            Duration::from_millis(50),
            CancellationToken::new(),
        )
        .await;
        assert!(matches!(r, Err(SuperviseError::Panicked(_))), "{r:?}");
    }
}
