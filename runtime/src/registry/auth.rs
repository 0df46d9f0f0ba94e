//! The registry auth flow (distribution `docs/spec/auth/token.md`): a 401's
//! `WWW-Authenticate` challenge is `Basic realm=...` (send credentials directly, as ECR asks)
//! or `Bearer realm=...,service=...,scope=...` (get a token from the realm with the
//! credentials, or anonymously, then send `Authorization: Bearer`). Tokens are kept per scope
//! until `expires_in` runs out (60 s when the server names no lifetime).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// The registry asks for no credentials.
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value: a scheme, then `key=value` or `key="quoted, value"`
/// pairs separated by commas. An unknown scheme is treated as Basic (credentials sent as is).
pub fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    if scheme.eq_ignore_ascii_case("bearer") {
        if let Some(realm) = params.get("realm") {
            return Challenge::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
            };
        }
    }
    Challenge::Basic
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

/// A token and when it stops being good.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub until: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Reads a token server's JSON answer: `token` or `access_token`, `expires_in` in seconds.
pub fn parse_token(body: &[u8]) -> Option<Token> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let value = v["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .or_else(|| v["access_token"].as_str())?
        .to_string();
    // The spec's default is 60 s; renew 10 s early so a token never expires mid-request.
    let secs = v["expires_in"].as_u64().filter(|s| *s > 0).unwrap_or(60);
    Some(Token {
        value,
        until: Instant::now() + Duration::from_secs(secs.saturating_sub(10).max(1)),
    })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            parse_challenge(
                r#"Basic realm="https://1.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com""#
            ),
            Challenge::Basic
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:1/t"),
            Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None
            }
        );
        // A Bearer challenge without a realm cannot be followed: credentials as they are.
        assert_eq!(parse_challenge("Bearer service=x"), Challenge::Basic);
    }

    #[test]
    fn tokens() {
        let t = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.value, "abc");
        assert!(t.until > Instant::now() + Duration::from_secs(200));
        let t = parse_token(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.value, "xyz");
        assert!(parse_token(b"{}").is_none());
        assert!(!format!("{t:?}").contains("xyz"));
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
