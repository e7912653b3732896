//! Money: a price is a whole number of [`Cents`] everywhere inside ConScope; this module holds
//! every conversion to and from dollars (JSON numbers, PostgreSQL `numeric(10,2)`, user input),
//! how an amount is printed (`$1,234.50`), the largest price the store can hold, and the percent
//! a change is of a price.
//!
//! ```text
//!   JSON / API / CLI dollars (f64) ──from_dollars──▶ Cents ──to_dollars──▶ JSON dollars (f64)
//!   SQL numeric (Decimal)        ──from_decimal──▶ Cents ──to_decimal──▶ SQL numeric
//!                                                  Cents ──Display─────▶ "$1,234.50"
//! ```
//!
//! The records on the detector's hot path ([`PriceEvent`](super::PriceEvent),
//! [`ListingState`](super::ListingState), …) keep their prices as bare `i64` cents; the
//! `cents`/`opt_cents` serde modules and [`Cents`] give them the same wire format.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of money in whole cents (negative for a fall). As free to copy as the `i64` it
/// wraps; it is a JSON number of dollars with two decimals on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Cents(pub i64);

impl Cents {
    pub const ZERO: Cents = Cents(0);
    /// Highest price PostgreSQL's `numeric(10,2)` columns can hold (99999999.99 dollars).
    pub const MAX_PRICE: Cents = Cents(9_999_999_999);

    /// Dollars (a JSON number, an API's price, a flag) rounded to the nearest cent; `None` for
    /// values that are not finite or too large to be a price of anything.
    #[inline]
    pub fn from_dollars(dollars: f64) -> Option<Cents> {
        let c = (dollars * 100.0).round();
        (c.is_finite() && c.abs() < 9.0e15).then_some(Cents(c as i64))
    }

    /// Dollars as a JSON number.
    #[inline]
    pub fn to_dollars(self) -> f64 {
        self.0 as f64 / 100.0
    }

    /// PostgreSQL `numeric` dollars back to cents (values written by ConScope have two decimals).
    #[inline]
    pub fn from_decimal(d: Decimal) -> Cents {
        Cents((d * Decimal::ONE_HUNDRED).round().try_into().unwrap_or(i64::MAX))
    }

    /// As PostgreSQL `numeric` dollars.
    #[inline]
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, 2)
    }

    /// A price the store can hold: more than 0, at most [`Self::MAX_PRICE`].
    #[inline]
    pub fn is_price(self) -> bool {
        (1..=Self::MAX_PRICE.0).contains(&self.0)
    }

    /// An amount the store can hold that may be zero (fees, totals).
    #[inline]
    pub fn is_storable(self) -> bool {
        (0..=Self::MAX_PRICE.0).contains(&self.0)
    }

    #[inline]
    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    #[inline]
    pub fn checked_sub(self, other: Cents) -> Option<Cents> {
        self.0.checked_sub(other.0).map(Cents)
    }

    #[inline]
    pub fn saturating_sub(self, other: Cents) -> Cents {
        Cents(self.0.saturating_sub(other.0))
    }

    /// `percent`% of the amount, rounded toward zero (a fee of 15%).
    #[inline]
    pub fn percent(self, percent: i64) -> Cents {
        Cents(self.0 * percent / 100)
    }

    /// The amount times `factor`, to the nearest cent (a simulated price moving by a few percent).
    #[inline]
    pub fn scaled(self, factor: f64) -> Cents {
        Cents((self.0 as f64 * factor).round() as i64)
    }
}

/// Bare cents as PostgreSQL `numeric` dollars: [`Cents::to_decimal`] for the `i64` fields.
#[inline]
pub fn dollars(cents: i64) -> Decimal {
    Cents(cents).to_decimal()
}

/// Decimal dollars back to bare cents: [`Cents::from_decimal`] for the `i64` fields.
#[inline]
pub fn cents_of(d: Decimal) -> i64 {
    Cents::from_decimal(d).0
}

/// `change` as a percent of `base` (both in cents): `-1500, 10000` is `-15.0`.
#[inline]
pub fn change_percent(change: i64, base: i64) -> f64 {
    change as f64 * 100.0 / base as f64
}

/// `$1,234.50`; negative amounts as `−$26.00` (a real minus sign).
impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "−" } else { "" };
        let abs = self.0.unsigned_abs();
        let dollars = (abs / 100).to_string();
        let mut grouped = String::with_capacity(dollars.len() + dollars.len() / 3);
        for (i, c) in dollars.chars().enumerate() {
            if i > 0 && (dollars.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        write!(f, "{sign}${grouped}.{:02}", abs % 100)
    }
}

impl Serialize for Cents {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.to_dollars())
    }
}

impl<'de> Deserialize<'de> for Cents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cents, D::Error> {
        let dollars = f64::deserialize(d)?;
        Cents::from_dollars(dollars).ok_or_else(|| serde::de::Error::custom("price is not finite"))
    }
}

/// Serde for an `i64` of cents as dollars, the wire format of [`Cents`].
pub mod cents {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Cents;

    #[inline]
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        Cents(*v).serialize(s)
    }

    #[inline]
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        Cents::deserialize(d).map(|c| c.0)
    }
}

/// As [`cents`], for optional amounts.
pub mod opt_cents {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Cents;

    #[inline]
    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(c) => s.serialize_f64(Cents(*c).to_dollars()),
            None => s.serialize_none(),
        }
    }

    #[inline]
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|f| {
                Cents::from_dollars(f)
                    .map(|c| c.0)
                    .ok_or_else(|| serde::de::Error::custom("amount is not finite"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_print_as_grouped_dollars_with_a_real_minus_sign() {
        assert_eq!(Cents(1234).to_string(), "$12.34");
        assert_eq!(Cents(123_450).to_string(), "$1,234.50");
        assert_eq!(Cents(-2600).to_string(), "−$26.00");
        assert_eq!(Cents(5).to_string(), "$0.05");
    }

    #[test]
    fn decimal_and_json_dollars_round_trip() {
        let c = Cents(14_250);
        assert_eq!(c.to_decimal().to_string(), "142.50");
        assert_eq!(Cents::from_decimal(c.to_decimal()), c);
        assert_eq!(serde_json::to_string(&c).expect("serializes"), "142.5");
        assert_eq!(serde_json::from_str::<Cents>("142.5").expect("reads"), c);
        assert_eq!(Cents::MAX_PRICE.to_dollars(), 99_999_999.99);
    }

    #[test]
    fn only_storable_amounts_are_prices() {
        assert!(Cents(1).is_price() && Cents::MAX_PRICE.is_price());
        assert!(!Cents(0).is_price() && Cents(0).is_storable());
        assert!(!Cents(Cents::MAX_PRICE.0 + 1).is_storable());
        assert_eq!(Cents(i64::MAX).checked_add(Cents(1)), None);
    }
}
