//! Secrets in the configuration: passwords, API keys, webhook URLs and tokens.
//!
//! A [`Secret`] deserializes from a plain string, but its `Debug` and `Display` never show the
//! value, so it cannot leak through a log line or an error by accident. Code that needs the value
//! calls [`Secret::expose`], which is easy to find in review.

use std::fmt;

use serde::{Deserialize, Serialize};

const REDACTED: &str = "<redacted>";

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A secret holding the redaction marker (empty stays empty, so "not set" is still visible).
    pub fn redacted_marker(&self) -> Self {
        if self.0.is_empty() {
            Self::default()
        } else {
            Self(REDACTED.into())
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(\"\")")
        } else {
            write!(f, "Secret({REDACTED})")
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

/// A URL safe to print: the password is replaced, and so is everything after the host for
/// URLs that carry their secret in the path or query (webhooks).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return REDACTED.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    // Keep a database name (no secret) but hide query strings, which may carry passwords.
    let tail = tail.split(['?', '#']).next().unwrap_or_default();
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn url_password_and_query_are_hidden() {
        assert_eq!(
            redact_url("postgres://app:pw@db:5432/conscope?password=pw2"),
            "postgres://app:<redacted>@db:5432/conscope"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:1/x"),
            "postgres://postgres@127.0.0.1:1/x"
        );
        assert_eq!(redact_url("not a url"), "<redacted>");
    }
}
