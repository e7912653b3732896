//! What a database error means for the batch that met it: the SQLSTATE decides whether the
//! data was refused (split the batch, send the refused records to the DLQ), the database was
//! unavailable (retry), or something else is wrong (retry, an operator may have to act). And how
//! an error is told: the server's own message and SQLSTATE, never the connection string.

use std::fmt::Write;

/// How a failed write is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database refused a value (classes 22, 23 other than the keys ConScope expects, 54):
    /// the same rows will fail every time, so the batch is split to find the records.
    Data,
    /// The database or the connection was unavailable (class 08, 40001, 40P01, 57P01-57P03,
    /// 57014, class 53, no answer at all): retried with the Postgres backoff.
    Transient,
    /// Anything else (a missing table, a permission): retried, and reported.
    Other,
}

/// Unique keys ConScope's own writes rely on. A violation of one is not a refused value but a
/// sign the rows were written before (by a batch whose COMMIT went unanswered, which persist
/// looks up in the stored offsets before retrying): the batch is retried whole, not split.
const EXPECTED_KEYS: [&str; 7] = [
    "price_history_kafka_partition_kafka_offset_key",
    "events_event_id_key",
    "listing_state_pkey",
    "price_alerts_pkey",
    "price_windows_pkey",
    "kafka_offsets_pkey",
    "window_progress_pkey",
];

/// The class of a SQLSTATE (`None`: no answer from the server, e.g. a lost connection), given
/// the constraint it names, if any.
pub fn classify(code: Option<&str>, constraint: Option<&str>) -> ErrorClass {
    let Some(code) = code else {
        return ErrorClass::Transient;
    };
    match code {
        "23505" if constraint.is_some_and(|c| EXPECTED_KEYS.contains(&c)) => ErrorClass::Other,
        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "57014" | "55P03" => ErrorClass::Transient,
        _ => match code.get(..2) {
            Some("22" | "23" | "54") => ErrorClass::Data,
            Some("08" | "53" | "58") => ErrorClass::Transient,
            _ => ErrorClass::Other,
        },
    }
}

/// The class of a driver error.
pub fn class_of(e: &tokio_postgres::Error) -> ErrorClass {
    match e.as_db_error() {
        Some(db) => classify(Some(db.code().code()), db.constraint()),
        // No SQLSTATE: the connection failed or closed, or a value could not be encoded.
        None => ErrorClass::Transient,
    }
}

/// Longest detail or context quoted from the server (they may quote a whole refused value).
const QUOTE_CHARS: usize = 200;

/// A driver error as one line: the server's message with its SQLSTATE and detail, or the
/// driver's message with its causes. Neither ever holds the connection string.
pub fn describe(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        let mut s = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            let _ = write!(s, ": {c}");
            cause = c.source();
        }
        return s;
    };
    let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        let _ = write!(s, "; {}", quote(detail));
    }
    if let Some(at) = db.where_() {
        let _ = write!(s, "; at {}", quote(at));
    }
    s
}

fn quote(s: &str) -> String {
    let one_line = s.replace('\n', " ");
    match one_line.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_values_are_data_errors() {
        for code in [
            "22021", "22008", "22003", "22P02", "23514", "23502", "23503", "54000",
        ] {
            assert_eq!(classify(Some(code), None), ErrorClass::Data, "{code}");
        }
        assert_eq!(
            classify(Some("23505"), Some("some_index_an_operator_added")),
            ErrorClass::Data
        );
    }

    #[test]
    fn the_unique_keys_conscope_writes_by_are_not_data_errors() {
        for key in EXPECTED_KEYS {
            assert_eq!(classify(Some("23505"), Some(key)), ErrorClass::Other, "{key}");
        }
    }

    #[test]
    fn an_unavailable_database_is_transient() {
        for code in [
            "08006", "08003", "40001", "40P01", "57P01", "57P02", "57P03", "57014", "53300",
        ] {
            assert_eq!(classify(Some(code), None), ErrorClass::Transient, "{code}");
        }
        assert_eq!(classify(None, None), ErrorClass::Transient, "no answer");
    }

    #[test]
    fn other_errors_are_neither() {
        for code in ["42P01", "42501", "XX000", "25P02"] {
            assert_eq!(classify(Some(code), None), ErrorClass::Other, "{code}");
        }
    }

    #[test]
    fn quotes_are_one_line_and_bounded() {
        let long = "x".repeat(3_000);
        let q = quote(&format!("a\nb {long}"));
        assert!(q.starts_with("a b x") && q.ends_with('…'));
        assert_eq!(q.chars().count(), QUOTE_CHARS + 1);
    }
}
