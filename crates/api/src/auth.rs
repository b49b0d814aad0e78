//! Bearer tokens and the three roles. With no token configured the API is open (the CLI allows
//! that only on loopback addresses, unless told `--insecure`).

use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::error::ApiError;

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET endpoints.
    Read,
    /// Also appends and commands.
    Write,
    /// Also plugins, replays, parked items, pause and resume.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Role)>,
}

impl Tokens {
    /// Tokens from the three optional settings; an empty string counts as not set.
    pub fn new(admin: Option<String>, write: Option<String>, read: Option<String>) -> Self {
        let entries = [
            (admin, Role::Admin),
            (write, Role::Write),
            (read, Role::Read),
        ]
        .into_iter()
        .filter_map(|(token, role)| {
            token
                .filter(|t| !t.is_empty())
                .map(|t| (t.into_bytes(), role))
        })
        .collect();
        Tokens { entries }
    }

    /// True when no token is configured and every request is allowed.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks that the request's bearer token has at least the `needed` role.
    pub fn authorize(&self, headers: &HeaderMap, needed: Role) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .ok_or(ApiError::Unauthorized)?;
        // Compare against every token, in time independent of where they differ.
        let mut role = None;
        for (token, token_role) in &self.entries {
            if constant_time_eq(token, presented) {
                role = role.max(Some(*token_role));
            }
        }
        match role {
            None => Err(ApiError::Unauthorized),
            Some(role) if role < needed => Err(ApiError::Forbidden {
                needed: needed.name(),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110, 11.1) and may be followed by more than one space.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_token(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn roles_include_the_lower_ones() {
        let tokens = Tokens::new(Some("a".into()), Some("w".into()), Some("r".into()));
        assert!(tokens.authorize(&with_token("r"), Role::Read).is_ok());
        assert!(matches!(
            tokens.authorize(&with_token("r"), Role::Write),
            Err(ApiError::Forbidden { .. })
        ));
        assert!(tokens.authorize(&with_token("w"), Role::Write).is_ok());
        assert!(matches!(
            tokens.authorize(&with_token("w"), Role::Admin),
            Err(ApiError::Forbidden { .. })
        ));
        assert!(tokens.authorize(&with_token("a"), Role::Admin).is_ok());
        assert!(matches!(
            tokens.authorize(&with_token("x"), Role::Read),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            tokens.authorize(&HeaderMap::new(), Role::Read),
            Err(ApiError::Unauthorized)
        ));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let tokens = Tokens::new(None, None, Some("r".into()));
        for value in ["Bearer r", "bearer r", "BEARER r", "Bearer   r"] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            assert!(tokens.authorize(&headers, Role::Read).is_ok(), "{value}");
        }
        for value in ["Bearerr", "Basic r", "Bearer", "Bearer ", "r"] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            assert!(tokens.authorize(&headers, Role::Read).is_err(), "{value}");
        }
    }

    #[test]
    fn no_tokens_means_open() {
        let tokens = Tokens::new(None, Some(String::new()), None);
        assert!(tokens.is_open());
        assert!(tokens.authorize(&HeaderMap::new(), Role::Admin).is_ok());
    }
}
