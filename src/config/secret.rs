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

/// A PostgreSQL URL safe to print, rebuilt from the parsed connection settings: user, hosts,
/// ports and database, with the password replaced and every other parameter (which may carry a
/// password too) left out. Nothing is cut out of the string itself, so no character in a
/// password (`/`, `@`, `:`, `?`, percent-escapes) can push part of it into what is printed. A
/// URL that does not parse, or whose parse leaves an `@` in a host or the database name (a
/// password with an unescaped `@`), prints as `<redacted>` whole.
pub fn redact_url(url: &str) -> String {
    let Ok(cfg) = url.parse::<tokio_postgres::Config>() else {
        return REDACTED.to_string();
    };
    let mut out = String::from("postgres://");
    if let Some(user) = cfg.get_user() {
        out.push_str(&escape(user));
        if cfg.get_password().is_some() {
            out.push(':');
            out.push_str(REDACTED);
        }
        out.push('@');
    }
    let ports = cfg.get_ports();
    let mut hosts = Vec::new();
    for (i, host) in cfg.get_hosts().iter().enumerate() {
        let name = match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => escape(&path.to_string_lossy()),
        };
        if name.contains('@') {
            return REDACTED.to_string();
        }
        let bracketed = if name.contains(':') {
            format!("[{name}]")
        } else {
            name
        };
        match ports.get(i).or(ports.first()) {
            Some(port) => hosts.push(format!("{bracketed}:{port}")),
            None => hosts.push(bracketed),
        }
    }
    out.push_str(&hosts.join(","));
    if let Some(db) = cfg.get_dbname() {
        if db.contains('@') {
            return REDACTED.to_string();
        }
        out.push('/');
        out.push_str(&escape(db));
    }
    match cfg.get_password() {
        // The last line of defence: never print a string that holds the password.
        Some(pw) if !pw.is_empty() && contains_bytes(out.as_bytes(), pw) => REDACTED.to_string(),
        _ => out,
    }
}

/// Percent-escape everything but URL-unreserved characters.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
        assert_eq!(redact_url("postgresql://h/x"), "postgres://h:5432/x");
        assert_eq!(redact_url("not a url"), "<redacted>");
    }

    #[test]
    fn a_password_with_url_punctuation_never_shows() {
        // As written in a URL: `@` escaped (it ends the user info), `/ : ?` as they are or escaped.
        for (url, password) in [
            ("postgres://app:p/ss%40w:rd?x@db:5432/conscope", "p/ss@w:rd?x"),
            (
                "postgres://app:p%2Fss%40w%3Ard%3Fx@db:5432/conscope",
                "p/ss@w:rd?x",
            ),
            ("postgresql://app:a/b/c@db/conscope?sslmode=disable", "a/b/c"),
            ("postgres://app:%3F%3A%2F@[::1]:7/conscope", "?:/"),
        ] {
            let shown = redact_url(url);
            assert!(shown.starts_with("postgres://app:<redacted>@"), "{url} → {shown}");
            assert!(shown.ends_with("/conscope"), "{url} → {shown}");
            for fragment in [password, "ss@w", "rd?x", "ss%40w", "a/b/c", "%3F%3A"] {
                assert!(!shown.contains(fragment), "{url} → {shown}");
            }
        }
        assert_eq!(
            redact_url("postgres://app:x@[::1]:7/conscope"),
            "postgres://app:<redacted>@[::1]:7/conscope"
        );
    }

    #[test]
    fn an_unescaped_at_in_a_password_redacts_the_whole_url() {
        // Parsed as password `a` and host `b@db`: the host would show the rest of it.
        assert_eq!(redact_url("postgres://app:a@b@db/conscope"), "<redacted>");
        // Parsed as password `p/ss` with host `w` and port `rd?x…`: not a URL at all.
        assert_eq!(redact_url("postgres://app:p/ss@w:rd?x@db/conscope"), "<redacted>");
        // A password that the parse put into the database name.
        assert_eq!(redact_url("postgres://app:pw@db/x@pw"), "<redacted>");
    }
}
