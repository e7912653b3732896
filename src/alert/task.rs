//! The `alert` task as the supervisor runs it: starts one sender per configured channel
//! (instance 0 only), one reader per owned partition of `price_alerts` and `processed_prices`,
//! and the evaluator between them; stops them all when one fails.
//!
//! Shutdown: readers stop fetching, the evaluator commits what it was handed and ends when the
//! readers are gone, senders finish the request in flight and record its answer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::consumer::{self, ReaderSpec, Source};
use super::evaluate::{self, Evaluator};
use super::notifiers::Notifier;
use super::sender::{self, SenderContext};
use super::{ALERT_CONSUMER, AlertError, queue};
use crate::app::App;
use crate::config::Config;
use crate::store::{self, offsets};
use crate::tasks::{Failure, TaskGroup};

/// The HTTP client every notifier uses.
pub fn http_client(cfg: &Config) -> Result<reqwest::Client, AlertError> {
    reqwest::Client::builder()
        .timeout(cfg.alert.request_timeout)
        .connect_timeout(cfg.alert.request_timeout)
        .user_agent(concat!("ConScope/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(AlertError::Http)
}

/// Build the notifier of channel `name`.
pub fn notifier(cfg: &Config, name: &str, http: reqwest::Client) -> Result<Notifier, AlertError> {
    let n = cfg
        .alert
        .notifiers
        .get(name)
        .ok_or_else(|| AlertError::Notifier(format!("no channel `{name}` in [alert.notifiers]")))?;
    Notifier::new(name, n, http, &cfg.detect).map_err(AlertError::Notifier)
}

/// Run the alert task until `cancel` fires or a part of it fails.
pub async fn run(ctx: App, cancel: CancellationToken) -> Result<(), AlertError> {
    let cfg = ctx.cfg.clone();
    // Stops this task's parts when one of them fails, without shutting down the process.
    let stop = cancel.child_token();
    let mut parts: TaskGroup<AlertError> = TaskGroup::new("alert", stop.clone());

    let mut wake = HashMap::new();
    if cfg.instance == 0 {
        let http = http_client(&cfg)?;
        for (name, ncfg) in &cfg.alert.notifiers {
            let notify = Arc::new(Notify::new());
            wake.insert(name.clone(), notify.clone());
            let sctx = SenderContext {
                pool: ctx.pool.clone(),
                cfg: cfg.clone(),
                metrics: ctx.metrics.clone(),
                notifier: notifier(&cfg, name, http.clone())?,
                url_fingerprint: queue::fingerprint(ncfg.url.expose()),
                limits: ncfg.effective_rate_limits(),
                wake: notify,
            };
            let token = stop.clone();
            parts.spawn(format!("sender {name}"), sender::run(sctx, token));
        }
    }

    let mut topics = vec![(Source::Alerts, &cfg.kafka.topics.price_alerts)];
    if cfg.pipeline.publish_processed {
        topics.push((Source::Processed, &cfg.kafka.topics.processed_prices));
    } else {
        tracing::warn!("pipeline.publish_processed is false: watches are not evaluated");
    }
    let (tx, rx) = mpsc::channel(cfg.alert.channel_capacity);
    let client = store::client(&ctx.pool, &cfg.postgres).await?;
    for (source, topic) in topics {
        let stored = offsets::load(&client, ALERT_CONSUMER, &topic.name).await?;
        let owned = (0..topic.partitions).filter(|p| (*p as u32) % cfg.instances.max(1) == cfg.instance);
        for partition in owned {
            let spec = ReaderSpec {
                source,
                topic: topic.name.clone(),
                partition,
                start: stored.get(&partition).map(|(next, _)| *next),
                start_from: cfg.alert.start_from,
            };
            let (k, kcfg, tx, token) = (ctx.kafka.clone(), cfg.kafka.clone(), tx.clone(), stop.clone());
            let metrics = ctx.metrics.clone();
            parts.spawn(format!("consumer {}/{partition}", topic.name), async move {
                consumer::run_partition(k, kcfg, &metrics, spec, tx, token).await
            });
        }
    }
    drop(client);
    drop(tx);
    let evaluator = Evaluator::new(ctx.pool.clone(), cfg.clone(), ctx.metrics.clone(), wake);
    parts.spawn("evaluate", evaluate::run(evaluator, rx));

    // The first part to fail stops the others; they finish what they have in hand (a sender
    // records its in-flight answer). The supervisor's shutdown deadline bounds the whole task.
    match parts.wait().await {
        Ok(()) => {
            tracing::info!("alert task stopped");
            Ok(())
        }
        Err(Failure::Failed { error, .. }) => Err(error),
        Err(Failure::Panicked { task, .. }) => Err(AlertError::Panicked(task)),
    }
}
