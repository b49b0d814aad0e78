//! Decoding of what arrives in a URL: percent-encoded path segments and query parameters, read
//! strictly: an unknown parameter, a repeated one, or a value out of its range is a 400, never
//! silently corrected.

use std::collections::HashMap;

use super::error::ApiError;

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); the result must be UTF-8.
pub fn percent_decode(input: &str, plus_is_space: bool, what: &str) -> Result<String, ApiError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "{what} has a malformed percent escape at byte {i}"
                        ))
                    })?;
                out.push(byte);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::invalid(format!("{what} is not valid UTF-8 once decoded")))
}

/// Every parameter of a query string, decoded, in order, except those named in `reserved`: the
/// parameters a route hands on to a plugin.
pub fn pairs_except(
    raw: Option<&str>,
    reserved: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name, true, "a query parameter name")?;
        if !reserved.contains(&name.as_str()) {
            let value = percent_decode(value, true, &format!("query parameter {name}"))?;
            pairs.push((name, value));
        }
    }
    Ok(pairs)
}

/// The parameters of a query string, checked against the names a route accepts.
pub struct Query {
    values: HashMap<String, Vec<String>>,
}

impl Query {
    /// Parses `raw` (without `?`); `allowed` names every parameter the route takes.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        Self::parse_where(raw, allowed, |_| false)
    }

    /// Parses the parameters named in `allowed` and passes over those `foreign` claims (a
    /// plugin's own parameters, say).
    pub fn parse_where(
        raw: Option<&str>,
        allowed: &[&str],
        foreign: impl Fn(&str) -> bool,
    ) -> Result<Self, ApiError> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name, true, "a query parameter name")?;
            if foreign(&name) {
                continue;
            }
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {name:?}; this route takes {}",
                    allowed.join(", ")
                )));
            }
            let value = percent_decode(value, true, &format!("query parameter {name}"))?;
            values.entry(name).or_default().push(value);
        }
        Ok(Query { values })
    }

    /// The single value of `name`, if given; given twice is an error.
    pub fn single(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.values.get(name).map(Vec::as_slice) {
            None => Ok(None),
            Some([value]) => Ok(Some(value)),
            Some(_) => Err(ApiError::invalid(format!(
                "query parameter {name} is given more than once"
            ))),
        }
    }

    /// A non-negative integer no larger than `max`.
    pub fn number(&self, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(raw) = self.single(name)? else {
            return Ok(None);
        };
        let value: u64 = raw.parse().map_err(|_| {
            ApiError::invalid(format!(
                "query parameter {name} must be a non-negative integer, found {raw:?}"
            ))
        })?;
        if value > max {
            return Err(ApiError::invalid(format!(
                "query parameter {name} is {value}; the maximum is {max}"
            )));
        }
        Ok(Some(value))
    }

    /// An integer from 1 to `max`, if given.
    pub fn positive(&self, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.number(name, max)? {
            Some(0) => Err(ApiError::invalid(format!(
                "query parameter {name} must be between 1 and {max}, found 0"
            ))),
            other => Ok(other),
        }
    }

    /// A page size: 1 to `max`, `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        Ok(self
            .positive("limit", max as u64)?
            .map_or(default, |n| n as usize))
    }

    /// Every value of a list parameter, repeated or comma-separated, without empty items.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.values
            .get(name)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_rejects_bad_ones() {
        assert_eq!(percent_decode("a%20b%2Fc", false, "x").unwrap(), "a b/c");
        assert_eq!(percent_decode("a+b", true, "x").unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false, "x").unwrap(), "a+b");
        assert_eq!(percent_decode("%C3%A9", false, "x").unwrap(), "é");
        assert!(percent_decode("%FF", false, "x").is_err());
        assert!(percent_decode("%G1", false, "x").is_err());
        assert!(percent_decode("%4", false, "x").is_err());
    }

    #[test]
    fn query_is_strict() {
        let q = Query::parse(
            Some("from=5&limit=10&type=A,B&type=C"),
            &["from", "limit", "type"],
        )
        .unwrap();
        assert_eq!(q.number("from", u64::MAX).unwrap(), Some(5));
        assert_eq!(q.limit(100, 10_000).unwrap(), 10);
        assert_eq!(q.list("type"), ["A", "B", "C"]);
        assert!(Query::parse(Some("limt=5"), &["limit"]).is_err());
        let q = Query::parse(Some("limit=0&from=-1"), &["from", "limit"]).unwrap();
        assert!(q.limit(100, 10_000).is_err());
        assert!(q.number("from", u64::MAX).is_err());
        let q = Query::parse(Some("limit=10001&from=1&from=2"), &["from", "limit"]).unwrap();
        assert!(q.limit(100, 10_000).is_err());
        assert!(q.number("from", u64::MAX).is_err());
    }
}
