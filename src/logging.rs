//! Logging through `tracing`: human-readable by default, JSON lines with `log.format = "json"`
//! or `--log-json`. `RUST_LOG` overrides `log.level`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.with_target(false).try_init(),
    };
}

/// An error with its chain of causes, `outer: cause: root cause`: how every error is printed
/// or logged, so that an error's own message never repeats its source.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
#[derive(Debug)]
pub struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the feed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_each_cause_once_outermost_first() {
        let e = Outer(std::io::Error::other("disk gone"));
        assert_eq!(chain(&e).to_string(), "reading the feed: disk gone");
    }
}
