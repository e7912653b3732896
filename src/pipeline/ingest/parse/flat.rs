//! The fast path for the record producers nearly always send: one flat JSON object, strings
//! without escapes, amounts with at most two decimals.
//!
//! simd-json's tape is a general parser: it indexes every structural character, copies every
//! string and converts every number, and the fields are then looked up on the tape. For this
//! one shape, a single forward pass over the bytes that reads each field straight into
//! [`Fields`] does less: the whole parse and validation of a record now takes about 0.9× the
//! time of the bare tape (`cargo bench --bench detector`, docs/benchmarks.md).
//!
//! The pass only ever answers for input it fully understands. Anything else — an escape in a
//! string, a nested value, an exponent, a control character, a type the field does not expect,
//! invalid JSON of any kind — returns `None`, and the record takes the tape path, which is the
//! authority on what a record means and on every error message. So both paths give the same
//! result for every input (a property test holds them to it); this one is only faster.

use std::borrow::Cow;

use super::Fields;

/// The fields ConScope reads, in the order the first ConScope writes them.
const KEYS: [&str; 17] = [
    "event_id",
    "event_name",
    "venue",
    "event_date",
    "source",
    "section",
    "row",
    "seat",
    "price",
    "fees",
    "total_price",
    "timestamp",
    "listing_id",
    "listing_url",
    "quantity",
    "delivery_method",
    "seller_notes",
];
/// Each key with its closing quote as sixteen bytes to compare against (with the mask of the
/// bytes that count, and how many they are): a key is recognised with one comparison.
const KEY_PATTERNS: [(u128, u128, usize); 17] = {
    let mut patterns = [(0, 0, 0); 17];
    let mut k = 0;
    while k < KEYS.len() {
        let key = KEYS[k].as_bytes();
        let (mut pattern, mut mask) = ([0u8; 16], [0u8; 16]);
        let mut i = 0;
        while i < key.len() {
            pattern[i] = key[i];
            mask[i] = 0xff;
            i += 1;
        }
        pattern[i] = b'"';
        mask[i] = 0xff;
        patterns[k] = (
            u128::from_le_bytes(pattern),
            u128::from_le_bytes(mask),
            key.len() + 1,
        );
        k += 1;
    }
    patterns
};
const EVENT_ID: usize = 0;
const EVENT_NAME: usize = 1;
const VENUE: usize = 2;
const EVENT_DATE: usize = 3;
const SOURCE: usize = 4;
const SECTION: usize = 5;
const ROW: usize = 6;
const SEAT: usize = 7;
const PRICE: usize = 8;
const FEES: usize = 9;
const TOTAL_PRICE: usize = 10;
const TIMESTAMP: usize = 11;
const LISTING_ID: usize = 12;
const LISTING_URL: usize = 13;
const QUANTITY: usize = 14;
const DELIVERY_METHOD: usize = 15;
const SELLER_NOTES: usize = 16;

/// Read a flat record, or `None` when the tape path must decide.
pub(super) fn scan(value: &[u8]) -> Option<Fields<'_>> {
    let text = simdutf8::basic::from_utf8(value).ok()?;
    let mut c = Cursor { text, at: 0 };
    let mut f = Fields {
        record: text,
        ..Fields::default()
    };
    c.expect(b'{')?;
    if c.peek()? == b'}' {
        c.at += 1;
    } else {
        let mut next_key = 0;
        loop {
            c.expect(b'"')?;
            let key = c.key(&mut next_key)?;
            c.expect(b':')?;
            c.skip_ws();
            match key {
                Some(EVENT_ID) => f.event_id = Some(c.quoted()?),
                Some(EVENT_NAME) => f.event_name = Some(c.quoted()?),
                Some(VENUE) => f.venue = Some(c.quoted()?),
                Some(EVENT_DATE) => f.event_date = c.nullable_str()?,
                Some(SOURCE) => f.source = Some(c.quoted()?),
                Some(SECTION) => f.section = c.nullable_str()?.map(Cow::Borrowed),
                Some(ROW) => f.row = c.nullable_str()?.map(Cow::Borrowed),
                Some(SEAT) => f.seat = c.nullable_str()?.map(Cow::Borrowed),
                Some(PRICE) => f.price = c.nullable_cents()?,
                Some(FEES) => f.fees = c.nullable_cents()?,
                Some(TOTAL_PRICE) => f.total_price = c.nullable_cents()?,
                Some(TIMESTAMP) => f.timestamp = c.nullable_str()?,
                Some(LISTING_ID) => f.listing_id = c.nullable_str()?.map(Cow::Borrowed),
                Some(LISTING_URL) => f.listing_url = c.nullable_str()?,
                Some(QUANTITY) => {
                    f.quantity = match c.nullable_hundredths()? {
                        None => None,
                        Some((n, false)) => Some(n / 100),
                        // `2.0`: the tape path says why a quantity must be whole.
                        Some((_, true)) => return None,
                    }
                }
                Some(DELIVERY_METHOD) => f.delivery_method = c.nullable_str()?,
                Some(SELLER_NOTES) => f.seller_notes = c.nullable_str()?,
                _ => c.skip_value()?,
            }
            match c.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.skip_ws();
    (c.at == value.len()).then_some(f)
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// The rest of a string whose opening quote was read; `None` if it holds an escape or a
    /// control character. Eight bytes at a time: most strings here are shorter than a call
    /// into a general-purpose search would be worth.
    fn string(&mut self) -> Option<&'a str> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // Bytes equal to zero (or, for `below_space`, under 0x20) get their high bit set. A
        // borrow may also flag bytes after a true match, never before it, so the lowest flag
        // is always a true one.
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let start = self.at;
        let b = self.bytes();
        let mut i = start;
        while let Some(chunk) = b.get(i..i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().ok()?);
            let quote = zero(x ^ (ONES * u64::from(b'"')));
            let backslash = zero(x ^ (ONES * u64::from(b'\\')));
            let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
            let stops = quote | backslash | below_space;
            if stops != 0 {
                i += (stops.trailing_zeros() / 8) as usize;
                return self.string_end(start, i);
            }
            i += 8;
        }
        while let Some(&c) = b.get(i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return self.string_end(start, i);
            }
            i += 1;
        }
        None
    }

    /// A string's text if the byte at `end` is its closing quote.
    fn string_end(&mut self, start: usize, end: usize) -> Option<&'a str> {
        if self.bytes()[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // Both ends sit next to an ASCII quote, so they are character boundaries.
        self.text.get(start..end)
    }

    /// A key whose opening quote was read, as its index in [`KEYS`] (`None` for a key
    /// ConScope does not read). Producers write their keys in one order, so the key after
    /// `KEYS[next]` is checked first with one comparison, before any search for its end.
    fn key(&mut self, next: &mut usize) -> Option<Option<usize>> {
        if let (Some(&(pattern, mask, len)), Some(ahead)) =
            (KEY_PATTERNS.get(*next), self.bytes().get(self.at..self.at + 16))
        {
            let ahead = u128::from_le_bytes(ahead.try_into().ok()?);
            if ahead & mask == pattern {
                self.at += len;
                *next += 1;
                return Some(Some(*next - 1));
            }
        }
        let key = self.string()?;
        let index = KEYS.iter().position(|k| *k == key);
        if let Some(i) = index {
            *next = i + 1;
        }
        Some(index)
    }

    /// A string value.
    fn quoted(&mut self) -> Option<&'a str> {
        if self.bytes().get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        self.string()
    }

    /// A string value or null.
    fn nullable_str(&mut self) -> Option<Option<&'a str>> {
        match self.bytes().get(self.at)? {
            b'n' => self.literal("null").map(|()| None),
            _ => self.quoted().map(Some),
        }
    }

    /// A dollar amount (a JSON number) in cents, or null.
    fn nullable_cents(&mut self) -> Option<Option<i64>> {
        // Exact: the tape path converts through f64 and rounds to cents, which gives the same
        // whole number for every amount of at most 13 integer digits and two decimals.
        Some(self.nullable_hundredths()?.map(|(n, _)| n))
    }

    /// A number with at most 13 integer digits, at most two non-zero decimals and no exponent,
    /// times 100, and whether it had a fraction; or null.
    fn nullable_hundredths(&mut self) -> Option<Option<(i64, bool)>> {
        let b = self.bytes();
        let mut i = self.at;
        if b.get(i) == Some(&b'n') {
            return self.literal("null").map(|()| None);
        }
        let negative = b.get(i) == Some(&b'-');
        i += usize::from(negative);
        let start = i;
        let mut n: i64 = 0;
        while let Some(d @ b'0'..=b'9') = b.get(i) {
            n = n * 10 + i64::from(d - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 13 || (digits > 1 && b[start] == b'0') {
            return None;
        }
        let mut decimals = 0;
        let fraction = b.get(i) == Some(&b'.');
        if fraction {
            i += 1;
            let first = i;
            while let Some(d @ b'0'..=b'9') = b.get(i) {
                if decimals < 2 {
                    n = n * 10 + i64::from(d - b'0');
                    decimals += 1;
                } else if *d != b'0' {
                    return None;
                }
                i += 1;
            }
            if i == first {
                return None;
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            return None;
        }
        for _ in decimals..2 {
            n *= 10;
        }
        self.at = i;
        Some(Some((if negative { -n } else { n }, fraction)))
    }

    /// Step over the value of a field ConScope does not read: a string, number or literal.
    fn skip_value(&mut self) -> Option<()> {
        match *self.bytes().get(self.at)? {
            b'"' => self.quoted().map(drop),
            b'n' => self.literal("null"),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            // Objects and arrays: the tape path.
            _ => None,
        }
    }

    /// A plain JSON number, `-?(0|[1-9][0-9]*)(\.[0-9]+)?` with at most 15 digits in each
    /// part. Exponents and longer numbers take the tape path, which decides their range.
    fn skip_number(&mut self) -> Option<()> {
        let b = self.bytes();
        let mut i = self.at + usize::from(b.get(self.at) == Some(&b'-'));
        let digits = |i: &mut usize| {
            let start = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - start
        };
        let start = i;
        let whole = digits(&mut i);
        if whole == 0 || whole > 15 || (whole > 1 && b[start] == b'0') {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !(1..=15).contains(&digits(&mut i)) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            return None;
        }
        self.at = i;
        Some(())
    }
}
