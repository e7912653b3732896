//! Parsing and validating one raw_prices value into a [`PriceEvent`].
//!
//! A record takes one of two paths to the same [`Fields`]. The common shape — a flat object,
//! strings without escapes, amounts with at most two decimals — is read in one forward pass
//! ([`flat`]); anything else walks simd-json's tape (no intermediate DOM, no serde visitor),
//! which also decides every error. Both accept the first ConScope's JSON as is:
//!
//! - unknown fields are ignored (forward compatibility);
//! - `price`, `fees`, `total_price` may be JSON numbers or numeric strings (`"142.50"`), because
//!   scrapers in the wild send both; they are rounded to whole cents;
//! - `section`, `row`, `seat` may be missing, null, strings or numbers (`7` becomes `"7"`);
//! - `timestamp` and `event_date` are ISO-8601, with or without an offset and fractional
//!   seconds, `T` or a space between date and time; a time without an offset is **UTC** (the
//!   first ConScope wrote Python's naive `isoformat()`); `event_date` may also be a bare date;
//! - `total_price` defaults to `price + fees` when absent; `quantity` defaults to 1.
//!
//! A record is then held to what PostgreSQL can store ([`limits`]): no NUL character in any
//! text, each text within its byte limit, the observation time from 2000-01-01 to at most
//! `ingest.max_future_skew` ahead of the clock, the show's date from 2000 to 2200, amounts
//! within `numeric(10,2)`. Everything else is a [`ParseError`] whose text is the DLQ `error`
//! header.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use simd_json::prelude::*;
use simd_json::{Buffers, Tape, tape::Value};

use crate::model::Cents;
use crate::model::limits::{self, MAX_VALUE_BYTES};
use crate::model::{PriceEvent, Texts};

/// Each text's field name and byte limit, in [`Texts`] order.
const TEXT_LIMITS: [(&str, usize); 11] = [
    ("event_id", limits::ID_BYTES),
    ("event_name", limits::NAME_BYTES),
    ("venue", limits::NAME_BYTES),
    ("source", limits::ID_BYTES),
    ("section", limits::ID_BYTES),
    ("row", limits::ID_BYTES),
    ("seat", limits::ID_BYTES),
    ("listing_id", limits::ID_BYTES),
    ("listing_url", limits::URL_BYTES),
    ("delivery_method", limits::ID_BYTES),
    ("seller_notes", limits::NOTES_BYTES),
];

/// Why a record was refused. The `Display` text is what the DLQ `error` header says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("empty value")]
    Empty,
    #[error("value is {0} bytes, over the {MAX_VALUE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` {problem}")]
    Invalid { field: &'static str, problem: String },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ParseError {
    ParseError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// A reusable parser: keeps simd-json's buffers, its tape and a scratch copy between records,
/// so parsing a record allocates nothing of its own.
#[derive(Default)]
pub struct Parser {
    buffers: Option<Buffers>,
    /// Empty between records (`reset` detaches it from the last record's bytes).
    tape: Option<Tape<'static>>,
    scratch: Vec<u8>,
    memo: Memo,
    clock: Clock,
}

/// The range of observation times a record may have, read from the wall clock only when a
/// record's time passes the last reading (so not once per record).
struct Clock {
    skew: TimeDelta,
    earliest: DateTime<Utc>,
    /// The wall clock plus `skew` when last read: never later than the true bound, so a time
    /// at or before it is accepted without reading the clock again.
    horizon: DateTime<Utc>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new(limits::MAX_FUTURE_SKEW)
    }
}

impl Clock {
    fn new(skew: Duration) -> Self {
        Self {
            skew: TimeDelta::from_std(skew).unwrap_or(TimeDelta::MAX),
            earliest: DateTime::from_timestamp(limits::EARLIEST_SECS, 0).unwrap_or_default(),
            horizon: DateTime::<Utc>::MIN_UTC,
        }
    }

    /// Why `t` is not an acceptable observation time, if it is not.
    fn check(&mut self, t: DateTime<Utc>) -> Result<(), ParseError> {
        if t < self.earliest {
            return Err(invalid("timestamp", "is before 2000-01-01"));
        }
        if t > self.horizon {
            self.horizon = Utc::now()
                .checked_add_signed(self.skew)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            if t > self.horizon {
                return Err(invalid(
                    "timestamp",
                    format!(
                        "is more than {} ahead of the clock (ingest.max_future_skew)",
                        humantime::format_duration(self.skew.to_std().unwrap_or_default())
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Texts that repeat from one record to the next, with what they were read as.
#[derive(Default)]
struct Memo {
    /// The last `event_date` text and its value: a show's date repeats on every record.
    event_date: Option<(String, DateTime<Utc>)>,
    /// The last timestamp's day (`YYYY-MM-DD`) and its date: a feed's records share the day.
    day: Day,
}

/// A `YYYY-MM-DD` text and the date it names, for [`fixed_iso`].
type Day = Option<([u8; 10], NaiveDate)>;

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser").finish_non_exhaustive()
    }
}

impl Parser {
    /// A parser refusing observations more than [`limits::MAX_FUTURE_SKEW`] ahead of the clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser refusing observations more than `skew` ahead of the clock
    /// (`ingest.max_future_skew`).
    pub fn with_max_future_skew(skew: Duration) -> Self {
        Self {
            clock: Clock::new(skew),
            ..Self::default()
        }
    }

    /// Parse and validate one record value. The event comes shared, as the engine's stages
    /// pass it on, so it is not returned by value and then copied into an allocation.
    pub fn parse(&mut self, value: &[u8]) -> Result<Arc<PriceEvent>, ParseError> {
        if value.iter().all(u8::is_ascii_whitespace) {
            return Err(ParseError::Empty);
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(ParseError::TooLarge(value.len()));
        }
        if let Some(fields) = flat::scan(value) {
            return finish(fields, &mut self.memo, &mut self.clock);
        }
        self.parse_tape(value)
    }

    /// The general path: simd-json's tape, for every record the flat pass leaves to it.
    fn parse_tape(&mut self, value: &[u8]) -> Result<Arc<PriceEvent>, ParseError> {
        // simd-json parses in place: work on a copy so the original bytes stay intact for the DLQ.
        self.scratch.clear();
        self.scratch.extend_from_slice(value);
        let buffers = self.buffers.get_or_insert_with(|| Buffers::new(MAX_VALUE_BYTES));
        let mut tape = self.tape.take().map_or_else(|| Tape(Vec::new()), Tape::reset);
        let result = match simd_json::fill_tape(&mut self.scratch, buffers, &mut tape) {
            Ok(()) => fields_from(tape.as_value()).and_then(|f| finish(f, &mut self.memo, &mut self.clock)),
            Err(e) => Err(ParseError::Json(e.to_string())),
        };
        self.tape = Some(tape.reset());
        result
    }
}

fn kind_of(v: &Value<'_, '_>) -> &'static str {
    if v.is_array() {
        "an array"
    } else if v.as_str().is_some() {
        "a string"
    } else if v.is_null() {
        "null"
    } else if v.as_bool().is_some() {
        "a boolean"
    } else {
        "a number"
    }
}

#[derive(Default)]
struct Fields<'a> {
    /// The record the texts were read from, when they are slices of it (the flat pass): the
    /// event's texts become spans of its copy. Empty on the tape path, whose texts are copies.
    record: &'a str,
    event_id: Option<&'a str>,
    event_name: Option<&'a str>,
    venue: Option<&'a str>,
    event_date: Option<&'a str>,
    source: Option<&'a str>,
    section: Option<Cow<'a, str>>,
    row: Option<Cow<'a, str>>,
    seat: Option<Cow<'a, str>>,
    price: Option<i64>,
    fees: Option<i64>,
    total_price: Option<i64>,
    timestamp: Option<&'a str>,
    listing_id: Option<Cow<'a, str>>,
    listing_url: Option<&'a str>,
    quantity: Option<i64>,
    delivery_method: Option<&'a str>,
    seller_notes: Option<&'a str>,
}

/// The fields of a record, read from simd-json's tape.
fn fields_from<'a>(root: Value<'_, 'a>) -> Result<Fields<'a>, ParseError> {
    let obj = root
        .as_object()
        .ok_or_else(|| ParseError::NotAnObject(kind_of(&root)))?;
    let mut f = Fields::default();
    for (key, v) in obj.iter() {
        match key {
            "event_id" => f.event_id = req_str(&v, "event_id")?,
            "event_name" => f.event_name = req_str(&v, "event_name")?,
            "venue" => f.venue = req_str(&v, "venue")?,
            "source" => f.source = req_str(&v, "source")?,
            "timestamp" => f.timestamp = opt_str(&v, "timestamp")?,
            "event_date" => f.event_date = opt_str(&v, "event_date")?,
            "section" => f.section = loose_str(&v, "section")?,
            "row" => f.row = loose_str(&v, "row")?,
            "seat" => f.seat = loose_str(&v, "seat")?,
            "listing_id" => f.listing_id = loose_str(&v, "listing_id")?,
            "listing_url" => f.listing_url = opt_str(&v, "listing_url")?,
            "delivery_method" => f.delivery_method = opt_str(&v, "delivery_method")?,
            "seller_notes" => f.seller_notes = opt_str(&v, "seller_notes")?,
            "price" => f.price = amount(&v, "price")?,
            "fees" => f.fees = amount(&v, "fees")?,
            "total_price" => f.total_price = amount(&v, "total_price")?,
            "quantity" => {
                f.quantity = if v.is_null() {
                    None
                } else {
                    Some(
                        v.as_i64()
                            .ok_or_else(|| invalid("quantity", "must be a whole number"))?,
                    )
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

/// Validate the fields and build the event.
fn finish(f: Fields<'_>, memo: &mut Memo, clock: &mut Clock) -> Result<Arc<PriceEvent>, ParseError> {
    let price = f.price.ok_or(ParseError::Missing("price"))?;
    if price <= 0 {
        return Err(invalid("price", "must be greater than 0"));
    }
    if price > Cents::MAX_PRICE.0 {
        return Err(invalid("price", "is above 99999999.99"));
    }
    if f.fees.is_some_and(|c| !Cents(c).is_storable()) {
        return Err(invalid("fees", "must be between 0 and 99999999.99"));
    }
    let total_price = f.total_price.unwrap_or(price + f.fees.unwrap_or(0));
    if !Cents(total_price).is_storable() {
        return Err(invalid("total_price", "must be between 0 and 99999999.99"));
    }
    let quantity = f.quantity.unwrap_or(1);
    if !(1..=10_000).contains(&quantity) {
        return Err(invalid("quantity", "must be between 1 and 10000"));
    }
    let timestamp = parse_time_with(
        f.timestamp.ok_or(ParseError::Missing("timestamp"))?,
        &mut memo.day,
    )
    .ok_or_else(|| invalid("timestamp", "is not an ISO-8601 date-time"))?;
    clock.check(timestamp)?;
    let event_date = match f.event_date {
        Some(s) if !s.is_empty() => match &memo.event_date {
            Some((text, t)) if text == s => Some(*t),
            _ => {
                let t = parse_time(s)
                    .or_else(|| parse_date(s))
                    .ok_or_else(|| invalid("event_date", "is not an ISO-8601 date or date-time"))?;
                let secs = t.timestamp();
                if !(limits::EARLIEST_SECS..limits::EVENT_DATE_END_SECS).contains(&secs) {
                    return Err(invalid(
                        "event_date",
                        "must be from 2000-01-01 to before 2200-01-01",
                    ));
                }
                memo.event_date = Some((s.to_string(), t));
                Some(t)
            }
        },
        _ => None,
    };
    let texts = [
        Some(required(f.event_id, "event_id")?),
        Some(required(f.event_name, "event_name")?),
        Some(required(f.venue, "venue")?),
        Some(required(f.source, "source")?),
        Some(f.section.as_deref().unwrap_or_default()),
        Some(f.row.as_deref().unwrap_or_default()),
        Some(f.seat.as_deref().unwrap_or_default()),
        f.listing_id.as_deref().filter(|s| !s.is_empty()),
        f.listing_url,
        f.delivery_method,
        f.seller_notes,
    ];
    // The flat pass refuses every control character, so only the tape path's texts (which may
    // hold an escaped `\u0000`) can hold a NUL, which a PostgreSQL text cannot.
    let may_hold_nul = f.record.is_empty();
    for (text, (field, max)) in texts.iter().zip(TEXT_LIMITS) {
        let Some(text) = text else { continue };
        if text.len() > max {
            return Err(invalid(
                field,
                format!("is {} bytes, over the {max}-byte limit", text.len()),
            ));
        }
        if may_hold_nul && text.as_bytes().contains(&0) {
            return Err(invalid(field, "contains a NUL character (\\u0000)"));
        }
    }
    Ok(Arc::new(PriceEvent {
        texts: Texts::build(f.record, texts),
        event_date,
        price,
        fees: f.fees,
        total_price,
        timestamp,
        quantity: quantity as i32,
    }))
}

fn required<'a>(v: Option<&'a str>, field: &'static str) -> Result<&'a str, ParseError> {
    match v {
        Some(s) if !is_blank(s) => Ok(s),
        Some(_) => Err(invalid(field, "must not be empty")),
        None => Err(ParseError::Missing(field)),
    }
}

/// Empty or whitespace only (Unicode whitespace too; ASCII text is decided without decoding).
fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        None => true,
        Some(b) if b.is_ascii_graphic() => false,
        Some(_) => s.trim().is_empty(),
    }
}

fn req_str<'a>(v: &Value<'_, 'a>, field: &'static str) -> Result<Option<&'a str>, ParseError> {
    v.into_string()
        .map(Some)
        .ok_or_else(|| invalid(field, format!("must be a string, found {}", kind_of(v))))
}

fn opt_str<'a>(v: &Value<'_, 'a>, field: &'static str) -> Result<Option<&'a str>, ParseError> {
    if v.is_null() {
        return Ok(None);
    }
    req_str(v, field)
}

/// A string, or a number written as its decimal text (seat `7`), or null.
fn loose_str<'a>(v: &Value<'_, 'a>, field: &'static str) -> Result<Option<Cow<'a, str>>, ParseError> {
    if v.is_null() {
        Ok(None)
    } else if let Some(s) = v.into_string() {
        Ok(Some(Cow::Borrowed(s)))
    } else if let Some(i) = v.as_i64() {
        Ok(Some(Cow::Owned(i.to_string())))
    } else {
        Err(invalid(field, format!("must be a string, found {}", kind_of(v))))
    }
}

/// A dollar amount as a JSON number or numeric string, in whole cents; null is absent.
fn amount(v: &Value<'_, '_>, field: &'static str) -> Result<Option<i64>, ParseError> {
    if v.is_null() {
        return Ok(None);
    }
    let dollars = match v.as_str() {
        Some(s) => s
            .trim()
            .trim_start_matches('$')
            .parse::<f64>()
            .map_err(|_| invalid(field, format!("`{}` is not a number", truncate(s, 40))))?,
        None => v
            .cast_f64()
            .ok_or_else(|| invalid(field, format!("must be a number, found {}", kind_of(v))))?,
    };
    if !dollars.is_finite() {
        return Err(invalid(field, "must be a finite number"));
    }
    Cents::from_dollars(dollars)
        .map(|c| Some(c.0))
        .ok_or_else(|| invalid(field, "is out of range"))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// ISO-8601 date-time: with an offset (`Z`, `+02:00`), or naive (taken as UTC).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    parse_time_with(s, &mut None)
}

/// [`parse_time`], reusing the date of `day` when the text's day is the same.
fn parse_time_with(s: &str, day: &mut Day) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = fixed_iso(s.as_bytes(), day) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // The common naive `isoformat()` shape, through chrono's fixed-format fast path.
    if let Ok(t) = s.parse::<NaiveDateTime>() {
        return Some(t.and_utc());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// The shape producers send almost always, `YYYY-MM-DDTHH:MM:SS[.f…][Z|±HH:MM]`, read by
/// position (chrono's general parser costs more than the rest of a record's validation).
/// Anything else returns `None` and takes the general path. The day is read once per run of
/// records on the same day: `day` keeps the last one read.
fn fixed_iso(b: &[u8], day: &mut Day) -> Option<DateTime<Utc>> {
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let text: [u8; 10] = b[..10].try_into().ok()?;
    let date = match day {
        Some((last, date)) if *last == text => *date,
        _ => {
            let (y, mo, d) = (num(&b[0..4])? as i32, num(&b[5..7])?, num(&b[8..10])?);
            // From the calendar fields straight to chrono's own representation (which rejects
            // a day the month does not have): no round trip through seconds since the epoch.
            let date = NaiveDate::from_ymd_opt(y, mo, d)?;
            *day = Some((text, date));
            date
        }
    };
    let (h, m, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some((b'.', frac)) = rest.split_first() {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(&frac[..digits])? * 10u32.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), hh1, hh2, b':', mm1, mm2] => {
            let v = i64::from(num(&[*hh1, *hh2])? * 3600 + num(&[*mm1, *mm2])? * 60);
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let local = date.and_hms_nano_opt(h, m, sec, nanos)?;
    if offset_secs == 0 {
        return Some(local.and_utc());
    }
    local
        .checked_sub_signed(chrono::TimeDelta::seconds(offset_secs))
        .map(|t| t.and_utc())
}

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

mod flat;
#[cfg(test)]
mod tests;
