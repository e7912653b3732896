//! Money: prices are whole cents (`i64`) everywhere inside ConScope; this module holds every
//! conversion to and from dollars (JSON numbers, PostgreSQL `numeric(10,2)`) and the largest
//! price the store can hold.

use rust_decimal::Decimal;

/// Highest price PostgreSQL's `numeric(10,2)` columns can hold, in cents.
pub const MAX_PRICE_CENTS: i64 = 9_999_999_999;

/// Cents as PostgreSQL `numeric` dollars.
pub fn dollars(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// Decimal dollars back to cents (values written by ConScope have two decimals).
pub fn cents_of(d: Decimal) -> i64 {
    (d * Decimal::ONE_HUNDRED).round().try_into().unwrap_or(i64::MAX)
}

/// Dollars (a JSON number with two decimals) <-> whole cents.
pub mod cents {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn to_dollars(cents: i64) -> f64 {
        cents as f64 / 100.0
    }

    /// Rounds to the nearest cent; `None` for values that are not finite.
    pub fn from_dollars(dollars: f64) -> Option<i64> {
        let c = (dollars * 100.0).round();
        (c.is_finite() && c.abs() < 9.0e15).then_some(c as i64)
    }

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(to_dollars(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let dollars = f64::deserialize(d)?;
        from_dollars(dollars).ok_or_else(|| serde::de::Error::custom("price is not finite"))
    }
}

/// As [`cents`], for optional amounts.
pub mod opt_cents {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(c) => s.serialize_f64(super::cents::to_dollars(*c)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|f| {
                super::cents::from_dollars(f).ok_or_else(|| serde::de::Error::custom("amount is not finite"))
            })
            .transpose()
    }
}
