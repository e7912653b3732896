//! One task group: start named tasks, let the first failure stop the others, and say who is
//! still running. The supervisor (its long-lived tasks), the engine (its stages) and the alert
//! task (its readers, evaluator and senders) each run their tasks in one.
//!
//! A task ends with `Ok(())` or its error; a panic is caught and reported with the task's
//! name. [`TaskGroup::wait`] is the whole policy: the first failure cancels the group's token
//! (the tasks finish what they hold and return); [`TaskGroup::wait_within`] adds a deadline
//! once the token is cancelled, after which the tasks still running are aborted and named.
//! [`TaskGroup::join_next`] hands each end to a caller that decides itself (the engine, which
//! also watches the broker's partition counts while its stages run).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::logging::chain;

/// While a group drains under a deadline, who is still running is logged this often.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// How one task ended badly.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure<E> {
    /// Task `task` returned `error`.
    Failed { task: String, error: E },
    /// Task `task` panicked with `message` (or was aborted from outside the group).
    Panicked { task: String, message: String },
}

/// How a group's [`TaskGroup::wait`] ended badly.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitError<E> {
    /// The first task to end badly.
    Failed(Failure<E>),
    /// These tasks were still running when the deadline passed; they were aborted.
    Abandoned { tasks: Vec<String> },
}

/// Named tasks that stop together; see the module docs.
#[derive(Debug)]
pub struct TaskGroup<E> {
    /// Names the group in its log lines.
    label: &'static str,
    set: JoinSet<Result<(), E>>,
    names: HashMap<Id, String>,
    stop: CancellationToken,
}

impl<E> TaskGroup<E>
where
    E: std::error::Error + Send + 'static,
{
    /// A group that cancels `stop` at its first failure. Pass a child token to keep a failure
    /// inside the group, the caller's own token to let it stop the caller too.
    pub fn new(label: &'static str, stop: CancellationToken) -> Self {
        Self {
            label,
            set: JoinSet::new(),
            names: HashMap::new(),
            stop,
        }
    }

    /// The token the group's tasks stop on.
    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Start `work` as the task `task`.
    pub fn spawn<F>(&mut self, task: impl Into<String>, work: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let handle = self.set.spawn(work);
        self.names.insert(handle.id(), task.into());
    }

    /// The tasks that have not ended yet, by name, sorted.
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.values().cloned().collect();
        names.sort();
        names
    }

    /// Abort every task still running (what they hold is dropped).
    pub fn abort_all(&mut self) {
        self.set.abort_all();
    }

    /// The next task to end: `Ok(name)` when it returned `Ok`, its [`Failure`] otherwise;
    /// `None` when no task is left. Cancel-safe, so it can be one branch of a `select!`.
    pub async fn join_next(&mut self) -> Option<Result<String, Failure<E>>> {
        let joined = self.set.join_next_with_id().await?;
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let task = self.names.remove(&id).unwrap_or_else(|| "unnamed".into());
        Some(match joined {
            Ok((_, Ok(()))) => Ok(task),
            Ok((_, Err(error))) => Err(Failure::Failed { task, error }),
            Err(e) => Err(Failure::Panicked {
                task,
                message: e.to_string(),
            }),
        })
    }

    /// Wait for every task. The first failure cancels the group's token and is what this
    /// returns once the others have ended.
    pub async fn wait(self) -> Result<(), Failure<E>> {
        let (first, _) = self.drain(None).await;
        first.map_or(Ok(()), Err)
    }

    /// [`wait`](Self::wait), but once the token is cancelled (by a failure or by the caller)
    /// `deadline` bounds the wait: who is still running is logged meanwhile, and when it passes
    /// they are aborted and reported as [`WaitError::Abandoned`] (unless a failure came first).
    pub async fn wait_within(self, deadline: Duration) -> Result<(), WaitError<E>> {
        match self.drain(Some(deadline)).await {
            (Some(failure), _) => Err(WaitError::Failed(failure)),
            (None, Some(tasks)) => Err(WaitError::Abandoned { tasks }),
            (None, None) => Ok(()),
        }
    }

    /// The first failure, and the tasks aborted at the deadline.
    async fn drain(mut self, deadline: Option<Duration>) -> (Option<Failure<E>>, Option<Vec<String>>) {
        let stop = self.stop.clone();
        let mut first: Option<Failure<E>> = None;
        let mut stopping = false;
        let mut stop_by: Option<Instant> = None;
        loop {
            if !stopping && stop.is_cancelled() {
                stopping = true;
                stop_by = deadline.map(|d| Instant::now() + d);
            }
            let next_report = stop_by.map(|t| t.min(Instant::now() + REPORT_EVERY));
            let report = tokio::time::sleep_until(next_report.unwrap_or_else(Instant::now));
            let joined = tokio::select! {
                biased;
                joined = self.join_next() => joined,
                () = stop.cancelled(), if !stopping => continue,
                () = report, if next_report.is_some() => {
                    let still = self.running();
                    if stop_by.is_some_and(|t| Instant::now() >= t) {
                        tracing::error!(group = self.label, tasks = ?still, "deadline passed; aborting the tasks still running");
                        self.set.abort_all();
                        return (first, Some(still));
                    }
                    tracing::info!(group = self.label, tasks = ?still, "waiting for tasks to finish");
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            match joined {
                Ok(task) => tracing::debug!(group = self.label, task, "task finished"),
                Err(failure) => {
                    match &failure {
                        Failure::Failed { task, error } => tracing::error!(
                            group = self.label,
                            task,
                            error = %chain(error),
                            "task failed; stopping the others"
                        ),
                        Failure::Panicked { task, message } => tracing::error!(
                            group = self.label,
                            task,
                            message,
                            "task panicked; stopping the others"
                        ),
                    }
                    first.get_or_insert(failure);
                    stop.cancel();
                }
            }
        }
        (first, None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    use super::*;

    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    #[error("{0}")]
    struct Oops(&'static str);

    /// A task that runs until the group stops it, then says it saw the stop.
    async fn until_stopped(stop: CancellationToken, saw: Arc<AtomicBool>) -> Result<(), Oops> {
        stop.cancelled().await;
        saw.store(true, SeqCst);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_failure_stops_the_others_and_is_returned_by_name() {
        let mut group = TaskGroup::new("test", CancellationToken::new());
        let saw = Arc::new(AtomicBool::new(false));
        group.spawn("steady", until_stopped(group.token().clone(), saw.clone()));
        group.spawn("flaky", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err(Oops("boom"))
        });
        let failure = group.wait().await.expect_err("flaky failed");
        assert_eq!(
            failure,
            Failure::Failed {
                task: "flaky".into(),
                error: Oops("boom")
            }
        );
        assert!(saw.load(SeqCst), "the steady task was stopped and finished");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_reported_with_the_task_name() {
        let mut group = TaskGroup::<Oops>::new("test", CancellationToken::new());
        let saw = Arc::new(AtomicBool::new(false));
        group.spawn("steady", until_stopped(group.token().clone(), saw.clone()));
        group.spawn("panics", async { panic!("bad input") });
        match group.wait().await {
            Err(Failure::Panicked { task, message }) => {
                assert_eq!(task, "panics");
                assert!(message.contains("bad input"), "{message}");
            }
            other => panic!("expected a panic, got {other:?}"),
        }
        assert!(saw.load(SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_still_running_at_the_deadline_are_aborted_and_named() {
        let stop = CancellationToken::new();
        let mut group = TaskGroup::<Oops>::new("test", stop.clone());
        group.spawn("stuck-b", std::future::pending());
        group.spawn("stuck-a", std::future::pending());
        let saw = Arc::new(AtomicBool::new(false));
        group.spawn("prompt", until_stopped(stop.clone(), saw.clone()));
        stop.cancel();
        let started = Instant::now();
        let failure = group
            .wait_within(Duration::from_secs(5))
            .await
            .expect_err("abandoned");
        assert_eq!(
            failure,
            WaitError::Abandoned {
                tasks: vec!["stuck-a".into(), "stuck-b".into()]
            }
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5), "exactly the deadline");
        assert!(saw.load(SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_before_the_deadline_is_what_is_reported() {
        let stop = CancellationToken::new();
        let mut group = TaskGroup::new("test", stop.clone());
        group.spawn("stuck", std::future::pending());
        group.spawn("drain", async { Err::<(), _>(Oops("final commit refused")) });
        let failure = group
            .wait_within(Duration::from_secs(5))
            .await
            .expect_err("failed");
        assert!(
            matches!(&failure, WaitError::Failed(Failure::Failed { task, .. }) if task == "drain"),
            "{failure:?}"
        );
        assert!(stop.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_that_all_end_well_end_the_group_well_without_stopping_anyone() {
        let stop = CancellationToken::new();
        let mut group = TaskGroup::<Oops>::new("test", stop.clone());
        group.spawn("a", async { Ok(()) });
        group.spawn("b", async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(())
        });
        assert_eq!(group.running(), ["a", "b"]);
        group
            .wait_within(Duration::from_secs(1))
            .await
            .expect("both ended well");
        assert!(!stop.is_cancelled(), "no failure, no stop");
    }

    #[tokio::test(start_paused = true)]
    async fn join_next_names_each_end_as_it_comes() {
        let mut group = TaskGroup::new("test", CancellationToken::new());
        group.spawn("late", async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err(Oops("late failure"))
        });
        group.spawn("early", async { Ok(()) });
        assert_eq!(group.join_next().await, Some(Ok("early".to_string())));
        assert_eq!(group.running(), ["late"]);
        assert!(matches!(
            group.join_next().await,
            Some(Err(Failure::Failed { task, .. })) if task == "late"
        ));
        assert_eq!(group.join_next().await, None);
    }
}
