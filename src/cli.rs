//! What the two binaries (`conscope`, `conscope-bench`) share at their edge: how arguments and the
//! configuration are read, how logging and the runtime start, and what the exit code says.
//!
//! Exit codes: 0 success, 2 a usage or configuration error (nothing was started), 1 a failure
//! while working. A failure is printed once, on stderr, with its whole chain of causes (`{:#}`),
//! never also through `tracing`.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, LogFormat};

/// The exit code of a usage or configuration error.
pub const USAGE: u8 = 2;

/// Parse the command line; `--help` and `--version` exit 0, a usage error exits [`USAGE`].
pub fn parse<P: clap::Parser>() -> Result<P, ExitCode> {
    P::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Load and validate the configuration; an error names the key and exits [`USAGE`].
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| usage_error(&crate::logging::chain(&e)))
}

/// Start logging (`--log-json` overrides `log.format`) and the multi-threaded runtime.
pub fn start(config: &Config, log_json: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let format = if log_json {
        LogFormat::Json
    } else {
        config.log.format
    };
    crate::logging::init(format, &config.log.level);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Print a usage or configuration error; exit [`USAGE`].
pub fn usage_error(e: &dyn Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(USAGE)
}

/// Print a failure with its chain of causes; exit 1.
pub fn failure(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", crate::logging::chain(e));
    ExitCode::FAILURE
}
