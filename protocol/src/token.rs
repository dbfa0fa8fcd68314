//! The bearer token a device presents for a space.
//!
//! The token is derived from the space's secret on the device; the relay stores only its SHA-256.
//! It travels as `Authorization: Bearer <token>`. This type never shows the token in `Debug`
//! output or errors, so it cannot leak into a log line by accident.

use std::fmt;

/// Shortest token accepted. Devices send 43 characters (32 bytes, base64url without padding).
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 512;

/// The HTTP authentication scheme: `Authorization: Bearer <token>`.
pub const AUTH_SCHEME: &str = "Bearer";

/// An opaque bearer token (RFC 6750 `b64token` characters, 16 to 512 of them).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a token or an `Authorization` header was refused. Carries no part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The header does not start with `Bearer `.
    #[error("expected `Authorization: Bearer <token>`")]
    NotBearer,
    /// The token is shorter than [`MIN_TOKEN_LEN`] or longer than [`MAX_TOKEN_LEN`].
    #[error("token length must be between {MIN_TOKEN_LEN} and {MAX_TOKEN_LEN} characters")]
    Length,
    /// The token holds a character outside the `b64token` set.
    #[error("token holds characters outside A-Z a-z 0-9 - . _ ~ + / =")]
    Charset,
}

impl Token {
    /// Validates a token string.
    pub fn new(token: impl Into<String>) -> Result<Token, TokenError> {
        let token = token.into();
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
            return Err(TokenError::Length);
        }
        let body = token.trim_end_matches('=');
        let valid = !body.is_empty()
            && body
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c));
        if !valid {
            return Err(TokenError::Charset);
        }
        Ok(Token(token))
    }

    /// Parses the value of an `Authorization` header (`Bearer <token>`; the scheme is
    /// case-insensitive).
    pub fn from_authorization(header: &str) -> Result<Token, TokenError> {
        let (scheme, rest) = header.split_once(' ').ok_or(TokenError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case(AUTH_SCHEME) {
            return Err(TokenError::NotBearer);
        }
        Token::new(rest.trim_matches(' '))
    }

    /// The value for an `Authorization` header.
    pub fn authorization(&self) -> String {
        format!("{AUTH_SCHEME} {}", self.0)
    }

    /// The token itself, for hashing. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c";

    #[test]
    fn parses_bearer_header() {
        let token = Token::from_authorization(&format!("bearer {GOOD}")).unwrap_or_else(|e| {
            panic!("{e}");
        });
        assert_eq!(token.expose(), GOOD);
        assert_eq!(token.authorization(), format!("Bearer {GOOD}"));
    }

    #[test]
    fn refuses_bad_tokens() {
        assert_eq!(Token::from_authorization(GOOD), Err(TokenError::NotBearer));
        assert_eq!(
            Token::from_authorization(&format!("Basic {GOOD}")),
            Err(TokenError::NotBearer)
        );
        assert_eq!(Token::new("short"), Err(TokenError::Length));
        assert_eq!(Token::new("x".repeat(513)), Err(TokenError::Length));
        assert_eq!(Token::new(format!("{GOOD}\n")), Err(TokenError::Charset));
        assert_eq!(Token::new("================"), Err(TokenError::Charset));
        assert_eq!(Token::new("=abcdefghijklmnopq"), Err(TokenError::Charset));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = Token::new(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{token:?}").contains(GOOD));
    }
}
