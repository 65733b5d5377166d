//! The registry auth flows of the Distribution spec: a request without credentials gets
//! 401 and a `WWW-Authenticate` challenge; `Basic realm=…` is answered with the
//! credential itself, `Bearer realm=…,service=…,scope=…` with a token fetched from the
//! realm (`GET realm?service=S&scope=SCOPE` with Basic credentials, or anonymous;
//! `POST realm` with `grant_type=refresh_token` for an identity token). The token is
//! then sent, to the registry host only, until a 401 asks for a new one.

use serde::Deserialize;
use ureq::Agent;

use super::client::Failure;
use super::credentials::{Credential, Secret};

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let params = parse_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            }),
            _ => None,
        }
    }
}

/// `k="v",k2=v2` (values may hold commas inside quotes).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push((key.trim().to_string(), value.to_string()));
        rest = next.trim_start_matches([',', ' ']);
    }
    out
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

/// Fetches a bearer token from the realm; returns the `Authorization` value. A dropped
/// connection or a 5xx is worth another try; a refusal is not.
pub fn fetch_token(
    agent: &Agent,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    credential: Option<&Credential>,
) -> Result<String, Failure> {
    let what = format!("get a token from {realm}");
    let retry = |message: String| Failure {
        message,
        retry: true,
    };
    let response = match credential.map(|c| (&c.secret, c)) {
        Some((Secret::IdentityToken(token), _)) => {
            let scope = scopes.join(" ");
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("client_id", "kiln"),
                ("refresh_token", token.as_str()),
                ("scope", scope.as_str()),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            agent.post(realm).send_form(form)
        }
        other => {
            let mut request = agent.get(realm);
            for scope in scopes {
                request = request.query("scope", scope);
            }
            if let Some(s) = service {
                request = request.query("service", s);
            }
            if let Some((_, c)) = other {
                request = request.header("authorization", c.basic_header().unwrap_or_default());
            }
            request.call()
        }
    };
    let mut response = response.map_err(|e| retry(format!("{what}: {e}")))?;
    let status = response.status().as_u16();
    if status >= 500 {
        return Err(retry(format!("{what}: it answered {status}")));
    }
    if status != 200 {
        let whose = credential.map_or("no credentials".to_string(), |c| {
            format!("the credentials from {}", c.source)
        });
        return Err(Failure::fatal(format!(
            "{what}: it answered {status} to {whose}"
        )));
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| retry(format!("{what}: {e}")))?;
    let answer: TokenAnswer = serde_json::from_str(&text)
        .map_err(|_| Failure::fatal(format!("{what}: the answer is not a token")))?;
    let token = if answer.token.is_empty() {
        answer.access_token
    } else {
        answer.token
    };
    if token.is_empty() {
        return Err(Failure::fatal(format!("{what}: the answer holds no token")));
    }
    Ok(format!("Bearer {token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="kiln""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }
}
