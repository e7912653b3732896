//! Bearer-token check for state-changing requests (`POST`/`DELETE /api/watches`).
//!
//! The token is `web.api_token`. With none configured every write is refused (403), so a
//! server started without thinking about it never accepts writes. The comparison does not stop
//! at the first differing byte, so response time does not reveal how much of a guess was right.

use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;
use crate::config::Secret;

/// `Ok` when `headers` carry `Authorization: Bearer <token>` with the configured token.
pub fn require_token(headers: &HeaderMap, token: &Secret) -> Result<(), ApiError> {
    if token.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "writes are disabled: web.api_token is not set on this server",
        ));
    }
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("this request needs an Authorization: Bearer <token> header"))?;
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    if same(given.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(unauthorized("the bearer token is not valid"))
    }
}

/// Equality that looks at every byte whatever it finds (only the length is revealed).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn an_empty_configured_token_refuses_every_write() {
        let err = require_token(&with_auth("Bearer "), &Secret::new("")).expect_err("refused");
        assert_eq!(err.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn only_the_exact_token_passes() {
        let token = Secret::new("s3cret");
        assert!(require_token(&with_auth("Bearer s3cret"), &token).is_ok());
        for bad in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"] {
            let err = require_token(&with_auth(bad), &token).expect_err(bad);
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{bad}");
            assert!(!err.message.contains("s3cret"), "{bad}: {}", err.message);
        }
        let err = require_token(&HeaderMap::new(), &token).expect_err("no header");
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    }
}
