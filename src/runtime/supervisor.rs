//! The supervisor: spawns every long-lived task by name, restarts a failed one with backoff
//! within a budget, and on shutdown waits for all under a deadline, naming who is still busy.
//!
//! A task is a factory called once per (re)start with a cancellation token; it returns when
//! cancelled (`Ok`), when its work is done (`Ok`, not restarted), or with an error (restarted,
//! unless `restart_budget` restarts already happened within `restart_window`: then the whole
//! process stops and exits non-zero naming the task).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::BackoffConfig;
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::tasks::{Failure, TaskGroup, WaitError};

pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// `cause` is the last failure with its causes ([`chain`]); it is not a `source`, so a
    /// printer of the error chain does not repeat it.
    #[error(
        "task `{task}` failed {failures} times within {} (pipeline.restart_budget = {budget}), giving up: {cause}",
        humantime::format_duration(*.window)
    )]
    BudgetSpent {
        task: String,
        failures: usize,
        budget: u32,
        window: Duration,
        cause: String,
    },
    #[error("task `{task}` panicked")]
    Panicked { task: String },
    /// A task failed while shutting down (a drain's final commit, say): what it held may not
    /// be stored, so the process must not exit 0.
    #[error("task `{task}` failed while shutting down: {cause}")]
    FailedWhileStopping { task: String, cause: String },
    #[error(
        "shutdown abandoned {tasks:?} after pipeline.shutdown_timeout = {}: their work in hand is not committed (it is read again at the next start)",
        humantime::format_duration(*.timeout)
    )]
    Abandoned { tasks: Vec<String>, timeout: Duration },
}

#[derive(Debug, Clone)]
pub struct RestartPolicy {
    pub budget: u32,
    pub window: Duration,
    /// The delays between restarts, from the one retry policy (its deadline is not used: the
    /// budget decides when to give up).
    pub backoff: BackoffConfig,
}

impl RestartPolicy {
    /// The delays between restarts: 1 s, doubling to 30 s, with a little jitter.
    pub const BACKOFF: BackoffConfig = BackoffConfig {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
        multiplier: 2.0,
        jitter: 0.1,
        deadline: BackoffConfig::NO_DEADLINE,
    };
}

#[derive(Debug)]
pub struct Supervisor {
    tasks: TaskGroup<SupervisorError>,
    cancel: CancellationToken,
    policy: RestartPolicy,
    metrics: Arc<Metrics>,
}

impl Supervisor {
    /// A supervisor whose tasks stop on `cancel`; a task spending its budget cancels it.
    pub fn new(cancel: CancellationToken, policy: RestartPolicy, metrics: Arc<Metrics>) -> Self {
        Self {
            tasks: TaskGroup::new("supervisor", cancel.clone()),
            cancel,
            policy,
            metrics,
        }
    }

    /// Spawn `factory` as the task `name`.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, factory: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let (cancel, policy, metrics) = (self.cancel.clone(), self.policy.clone(), self.metrics.clone());
        self.tasks
            .spawn(name, supervise(name, factory, cancel, policy, metrics));
    }

    /// Wait until every task ends. The first task to spend its budget cancels the rest; on
    /// shutdown, tasks get `deadline` to finish, and those still running are logged meanwhile.
    pub async fn wait(self, deadline: Duration) -> Result<(), SupervisorError> {
        self.tasks
            .wait_within(deadline)
            .await
            .map_err(|failure| match failure {
                WaitError::Failed(Failure::Failed { error, .. }) => error,
                WaitError::Failed(Failure::Panicked { task, .. }) => SupervisorError::Panicked { task },
                WaitError::Abandoned { tasks } => SupervisorError::Abandoned {
                    tasks,
                    timeout: deadline,
                },
            })
    }
}

async fn supervise<F, Fut>(
    name: &'static str,
    factory: F,
    cancel: CancellationToken,
    policy: RestartPolicy,
    metrics: Arc<Metrics>,
) -> Result<(), SupervisorError>
where
    F: Fn(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    let mut failures: VecDeque<Instant> = VecDeque::new();
    let mut backoff = Backoff::new(&policy.backoff);
    loop {
        tracing::debug!(task = name, "task starting");
        // Run the attempt as its own tokio task so a panic is caught and treated as a failure.
        let attempt = tokio::spawn(factory(cancel.clone()));
        let result = match attempt.await {
            Ok(r) => r,
            Err(join) if join.is_panic() => Err(format!("task panicked: {join}").into()),
            Err(join) => Err(join.to_string().into()),
        };
        let error = match result {
            Ok(()) => return Ok(()),
            Err(e) if cancel.is_cancelled() => {
                return Err(SupervisorError::FailedWhileStopping {
                    task: name.into(),
                    cause: chain(e.as_ref()).to_string(),
                });
            }
            Err(e) => e,
        };
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.window)
        {
            failures.pop_front();
        }
        let cause = chain(error.as_ref()).to_string();
        metrics.set_last_error(format!("{name}: {cause}"));
        if failures.len() as u32 > policy.budget {
            return Err(SupervisorError::BudgetSpent {
                task: name.into(),
                failures: failures.len(),
                budget: policy.budget,
                window: policy.window,
                cause,
            });
        }
        metrics.counters.task_restarts.inc();
        // Without a deadline the policy always has a next delay.
        let delay = backoff.next_delay().unwrap_or(policy.backoff.max);
        tracing::warn!(task = name, error = %cause, restart_in = ?delay, "task failed; restarting");
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            budget: 2,
            window: Duration::from_secs(60),
            backoff: BackoffConfig {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
                jitter: 0.0,
                ..RestartPolicy::BACKOFF
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_failing_past_its_budget_stops_everything_naming_it() {
        let cancel = CancellationToken::new();
        let mut sup = Supervisor::new(cancel.clone(), policy(), Arc::default());
        let attempts = Arc::new(AtomicU32::new(0));
        let a = attempts.clone();
        sup.spawn("flaky", move |_| {
            let a = a.clone();
            async move {
                a.fetch_add(1, Relaxed);
                Err::<(), TaskError>("boom".into())
            }
        });
        sup.spawn("steady", |cancel: CancellationToken| async move {
            cancel.cancelled().await;
            Ok(())
        });
        let err = sup.wait(Duration::from_secs(5)).await.expect_err("budget spent");
        assert_eq!(
            err.to_string(),
            "task `flaky` failed 3 times within 1m (pipeline.restart_budget = 2), giving up: boom"
        );
        // Printed as a chain (as `main` does), the cause is said once.
        assert_eq!(
            format!("{:#}", anyhow::Error::from(err)).matches("boom").count(),
            1
        );
        assert_eq!(attempts.load(Relaxed), 3);
        assert!(cancel.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_recovers_within_budget_keeps_running() {
        let cancel = CancellationToken::new();
        let mut sup = Supervisor::new(cancel.clone(), policy(), Arc::default());
        let attempts = Arc::new(AtomicU32::new(0));
        let a = attempts.clone();
        sup.spawn("recovers", move |cancel: CancellationToken| {
            let a = a.clone();
            async move {
                if a.fetch_add(1, Relaxed) < 2 {
                    return Err("transient".into());
                }
                cancel.cancelled().await;
                Ok(())
            }
        });
        let stopper = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stopper.cancel();
        });
        sup.wait(Duration::from_secs(5)).await.expect("clean shutdown");
        assert_eq!(attempts.load(Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_a_failure_not_a_crash() {
        let mut p = policy();
        p.budget = 0;
        let mut sup = Supervisor::new(CancellationToken::new(), p, Arc::default());
        sup.spawn("panics", |_| async { panic!("bad") });
        let err = sup.wait(Duration::from_secs(5)).await.expect_err("fails");
        assert!(err.to_string().contains("panics"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_still_running_at_the_shutdown_deadline_fails_the_shutdown_by_name() {
        let cancel = CancellationToken::new();
        let mut sup = Supervisor::new(cancel.clone(), policy(), Arc::default());
        sup.spawn("stuck", |_| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        sup.spawn("prompt", |cancel: CancellationToken| async move {
            cancel.cancelled().await;
            Ok(())
        });
        cancel.cancel();
        let err = sup.wait(Duration::from_secs(5)).await.expect_err("abandoned");
        assert!(
            matches!(&err, SupervisorError::Abandoned { tasks, .. } if tasks == &["stuck"]),
            "{err}"
        );
        assert!(err.to_string().contains("\"stuck\""), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_failing_while_it_drains_fails_the_shutdown_by_name() {
        let cancel = CancellationToken::new();
        let mut sup = Supervisor::new(cancel.clone(), policy(), Arc::default());
        sup.spawn("engine", |cancel: CancellationToken| async move {
            cancel.cancelled().await;
            Err::<(), TaskError>("final commit: connection refused".into())
        });
        cancel.cancel();
        let err = sup.wait(Duration::from_secs(5)).await.expect_err("failed");
        assert_eq!(
            err.to_string(),
            "task `engine` failed while shutting down: final commit: connection refused"
        );
    }
}
