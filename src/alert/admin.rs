//! `conscope alerts list|redeliver`: looking at deliveries and putting failed ones back.
//!
//! - `list` prints deliveries (newest first) with their status, attempts, last HTTP status and
//!   last error. A pending delivery whose channel is disabled shows as `waiting`. Errors are
//!   shown with every configured webhook URL and header value taken out.
//! - `redeliver` selects deliveries by channel, by when they were raised (`--since 24h`, or
//!   `--from`/`--to`) and/or by alert id (selectors combine: all must match), puts the `failed`
//!   and `disabled` ones back to `pending` with a whole `alert.backoff.deadline` ahead of them,
//!   and enables again every disabled channel it names or touches. A running `conscope run`
//!   picks them up within `alert.poll_interval`.

use std::time::Duration;

use anyhow::{Context, ensure};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tokio_postgres::GenericClient;

use super::queue;
use crate::config::Config;
use crate::store::{self, StoreError, migrate};

#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// List deliveries (newest first) with their status, attempts and last error.
    ///
    /// Statuses: pending (will be sent), waiting (pending, but its channel is disabled after
    /// persistent 404s), sent, failed (given up at alert.backoff.deadline, or refused with a
    /// 4xx). Webhook URLs and header values are never shown.
    List(ListArgs),
    /// Put failed (and disabled) deliveries back to pending and enable their channels again.
    ///
    /// Select by --channel, by when the alert was raised (--since, or --from/--to) and/or by
    /// --alert; every given selector must match, and at least one is needed. Each delivery put
    /// back gets a whole alert.backoff.deadline again; every channel named or touched that was
    /// disabled is enabled again (also with no failed delivery: `--channel NAME` alone enables
    /// NAME). A running `conscope run` sends them within alert.poll_interval.
    Redeliver(Selection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusArg {
    Pending,
    Waiting,
    Sent,
    Failed,
    /// Rows marked `disabled` by an older ConScope, and `waiting` ones.
    Disabled,
    All,
}

impl StatusArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Waiting => "waiting",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
            Self::All => "all",
        }
    }
}

/// Which deliveries: every given selector must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Only this channel (a name in [alert.notifiers]).
    #[arg(long)]
    pub channel: Option<String>,
    /// Only alerts raised within this long before now, e.g. `24h`, `30m`, `7days`.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "from")]
    pub since: Option<Duration>,
    /// Only alerts raised at or after this time (RFC 3339, or `YYYY-MM-DD[THH:MM:SS]` in UTC).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Only alerts raised before this time (same forms as --from).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Only this alert id (repeatable).
    #[arg(long = "alert")]
    pub alerts: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Which deliveries to show.
    #[arg(long, value_enum, default_value = "all")]
    pub status: StatusArg,
    #[command(flatten)]
    pub selection: Selection,
    /// Show at most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

/// `2026-12-03T10:00:00Z`, `2026-12-03T10:00:00` (UTC) or `2026-12-03` (midnight UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is not a time: use RFC 3339 (2026-12-03T10:00:00Z) or 2026-12-03"))
}

impl Selection {
    fn is_empty(&self) -> bool {
        self.channel.is_none()
            && self.since.is_none()
            && self.from.is_none()
            && self.to.is_none()
            && self.alerts.is_empty()
    }

    /// The lower bound on `created_at`: `--from`, or now − `--since`.
    fn lower(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        match self.since {
            Some(d) => {
                let d = chrono::Duration::from_std(d).context("--since is too long")?;
                Ok(Some(
                    Utc::now().checked_sub_signed(d).context("--since is too long")?,
                ))
            }
            None => Ok(self.from),
        }
    }
}

/// One delivery as `list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub alert_id: String,
    pub channel: String,
    pub status: String,
    pub attempts: i32,
    pub http_status: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// The `(channel, url fingerprint)` of every configured channel: a `notifier_state` row
/// disables a channel only while its URL is the one that was refused.
fn fingerprints(cfg: &Config) -> (Vec<String>, Vec<String>) {
    cfg.alert
        .notifiers
        .iter()
        .map(|(name, n)| (name.clone(), queue::fingerprint(n.url.expose())))
        .unzip()
}

/// Deliveries matching `status` and `sel`, newest first.
pub async fn list(
    client: &impl GenericClient,
    cfg: &Config,
    status: StatusArg,
    sel: &Selection,
    lower: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Row>, StoreError> {
    let (channels, fps) = fingerprints(cfg);
    let rows = client
        .query(
            "WITH disabled AS (
                 SELECT n.channel FROM notifier_state n
                   JOIN UNNEST($7::text[], $8::text[]) AS c (channel, fp)
                     ON c.channel = n.channel AND c.fp = n.url_fingerprint)
             SELECT d.alert_id, d.channel,
                    CASE WHEN d.status = 'pending' AND x.channel IS NOT NULL THEN 'waiting'
                         ELSE d.status END AS shown,
                    d.attempts, d.http_status, d.created_at, d.updated_at, d.last_error
               FROM alert_deliveries d LEFT JOIN disabled x ON x.channel = d.channel
              WHERE ($1::text IS NULL OR d.channel = $1)
                AND ($2::timestamptz IS NULL OR d.created_at >= $2)
                AND ($3::timestamptz IS NULL OR d.created_at < $3)
                AND (cardinality($4::text[]) = 0 OR d.alert_id = ANY($4))
                AND CASE $5::text
                      WHEN 'all' THEN true
                      WHEN 'waiting' THEN d.status = 'pending' AND x.channel IS NOT NULL
                      WHEN 'pending' THEN d.status = 'pending' AND x.channel IS NULL
                      WHEN 'disabled' THEN d.status = 'disabled'
                                           OR (d.status = 'pending' AND x.channel IS NOT NULL)
                      ELSE d.status = $5 END
              ORDER BY d.created_at DESC, d.alert_id, d.channel
              LIMIT $6",
            &[
                &sel.channel,
                &lower,
                &sel.to,
                &sel.alerts,
                &status.as_str(),
                &limit.max(0),
                &channels,
                &fps,
            ],
        )
        .await
        .map_err(StoreError::query("list deliveries"))?;
    Ok(rows
        .iter()
        .map(|r| Row {
            alert_id: r.get(0),
            channel: r.get(1),
            status: r.get(2),
            attempts: r.get(3),
            http_status: r.get(4),
            created_at: r.get(5),
            updated_at: r.get(6),
            last_error: r.get(7),
        })
        .collect())
}

/// What `redeliver` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Redelivered {
    /// Deliveries put back to pending, per channel.
    pub per_channel: Vec<(String, i64)>,
    /// Channels that were disabled and are enabled again.
    pub enabled: Vec<String>,
}

/// Put the failed and disabled deliveries `sel` matches back to pending (a fresh retry budget),
/// and enable again the channels named or touched. One transaction.
pub async fn redeliver(
    client: &mut deadpool_postgres::Object,
    sel: &Selection,
    lower: Option<DateTime<Utc>>,
) -> Result<Redelivered, StoreError> {
    let tx = client.transaction().await.map_err(StoreError::query("begin"))?;
    let per_channel = tx
        .query(
            "WITH back AS (
                 UPDATE alert_deliveries d
                    SET status = 'pending', next_attempt_at = now(), retry_from = now(),
                        updated_at = now()
                  WHERE d.status IN ('failed', 'disabled')
                    AND ($1::text IS NULL OR d.channel = $1)
                    AND ($2::timestamptz IS NULL OR d.created_at >= $2)
                    AND ($3::timestamptz IS NULL OR d.created_at < $3)
                    AND (cardinality($4::text[]) = 0 OR d.alert_id = ANY($4))
                 RETURNING d.channel)
             SELECT channel, count(*) FROM back GROUP BY channel ORDER BY channel",
            &[&sel.channel, &lower, &sel.to, &sel.alerts],
        )
        .await
        .map_err(StoreError::query("redeliver deliveries"))?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    // The channels named, and those of every matching delivery (pending ones too: they wait
    // for a disabled channel).
    let enabled = tx
        .query(
            "DELETE FROM notifier_state n
              WHERE n.channel = $1
                 OR n.channel IN (
                    SELECT d.channel FROM alert_deliveries d
                     WHERE d.status = 'pending'
                       AND ($1::text IS NULL OR d.channel = $1)
                       AND ($2::timestamptz IS NULL OR d.created_at >= $2)
                       AND ($3::timestamptz IS NULL OR d.created_at < $3)
                       AND (cardinality($4::text[]) = 0 OR d.alert_id = ANY($4)))
             RETURNING n.channel",
            &[&sel.channel, &lower, &sel.to, &sel.alerts],
        )
        .await
        .map_err(StoreError::query("enable notifiers"))?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    tx.commit().await.map_err(StoreError::query("commit redeliver"))?;
    Ok(Redelivered { per_channel, enabled })
}

/// `text` with every configured secret (webhook URL, its path, header values) replaced.
fn scrub(cfg: &Config, text: &str) -> String {
    let mut out = text.to_string();
    for n in cfg.alert.notifiers.values() {
        let url = n.url.expose();
        let mut secrets = vec![url.to_string()];
        if let Ok(u) = reqwest::Url::parse(url)
            && u.path().len() > 1
        {
            secrets.push(u.path().to_string());
        }
        secrets.extend(n.headers.values().map(|v| v.expose().to_string()));
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    out
}

/// One line of text per field: tabs and line breaks in an error would break the columns.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Run one `conscope alerts` command, printing its result.
pub async fn run(command: AlertsCommand, cfg: &Config) -> anyhow::Result<()> {
    let pool = store::pool(&cfg.postgres)?;
    let mut client = store::client(&pool, &cfg.postgres).await?;
    migrate::apply(&mut client, migrate::MIGRATIONS).await?;
    match command {
        AlertsCommand::List(args) => {
            let lower = args.selection.lower()?;
            let limit = args.limit.max(1);
            let rows = list(&**client, cfg, args.status, &args.selection, lower, limit).await?;
            println!("alert_id\tchannel\tstatus\tattempts\thttp_status\traised\tupdated\tlast_error");
            for r in &rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.alert_id,
                    r.channel,
                    r.status,
                    r.attempts,
                    r.http_status.map_or("-".to_string(), |s| s.to_string()),
                    r.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.last_error
                        .as_deref()
                        .map_or("-".to_string(), |e| one_line(&scrub(cfg, e))),
                );
            }
            if rows.len() as i64 == limit {
                eprintln!("note: showing the newest {limit}; use --limit or narrow the selection for more");
            }
        }
        AlertsCommand::Redeliver(sel) => {
            ensure!(
                !sel.is_empty(),
                "say which deliveries: --channel NAME, --since 24h, --from/--to TIME and/or --alert ID"
            );
            let lower = sel.lower()?;
            let done = redeliver(&mut client, &sel, lower).await?;
            let total: i64 = done.per_channel.iter().map(|(_, n)| n).sum();
            println!("{total} deliveries back to pending");
            for (channel, n) in &done.per_channel {
                println!("  {channel}: {n}");
                if !cfg.alert.notifiers.contains_key(channel) {
                    eprintln!(
                        "note: channel `{channel}` is not in [alert.notifiers]: its deliveries wait until it is configured"
                    );
                }
            }
            for channel in &done.enabled {
                println!("channel `{channel}` was disabled; it is enabled again");
            }
            if !cfg.alert.enabled {
                eprintln!("note: alert.enabled is false: `conscope run` will not send them");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_the_documented_forms() {
        let want = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z").expect("t");
        assert_eq!(parse_time("2026-12-03T10:00:00Z"), Ok(want.with_timezone(&Utc)));
        assert_eq!(
            parse_time("2026-12-03T11:00:00+01:00"),
            Ok(want.with_timezone(&Utc))
        );
        assert_eq!(parse_time("2026-12-03T10:00:00"), Ok(want.with_timezone(&Utc)));
        assert_eq!(
            parse_time("2026-12-03").map(|t| t.to_rfc3339()),
            Ok("2026-12-03T00:00:00+00:00".to_string())
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn errors_are_shown_without_secrets() {
        let cfg = Config::from_toml_str(
            "[alert.notifiers.ops]\nkind = \"webhook\"\nurl = \"https://h.example/hooks/t0ken\"\n\
             headers = { Authorization = \"Bearer s3cret\" }\n",
            "t",
            Vec::new(),
        )
        .expect("valid");
        let text = scrub(
            &cfg,
            "echo https://h.example/hooks/t0ken and /hooks/t0ken, Bearer s3cret",
        );
        assert!(!text.contains("t0ken") && !text.contains("s3cret"), "{text}");
        assert_eq!(one_line("a\tb\nc"), "a b c");
    }

    #[test]
    fn an_extreme_since_is_an_error_not_a_panic() {
        let sel = Selection {
            since: Some(Duration::MAX),
            ..Selection::default()
        };
        assert!(sel.lower().is_err());
    }
}
