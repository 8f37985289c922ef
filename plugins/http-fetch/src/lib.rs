//! `http-fetch`: fetches a URL through `wasi:http` — only where the task's
//! `grants.http` allows — follows redirects (each one a new request the host
//! checks again), stores the body as a media object and reports what came.
//!
//! Input `{"url": "https://example.com/page", "method": "GET", "headers":
//! {"accept": "text/html"}, "max_redirects": 5, "name": "body"}`: `url` is
//! required (`http` or `https`); `method` GET (default) or HEAD; `name` the
//! media object's file name (default `body`).
//!
//! - Result: `{"url", "status", "headers", "size", "sha256", "redirects",
//!   "media": {"id", "url"}}` (`url`: the one that answered; `media` absent
//!   for an empty body).
//! - Outputs: `status`, `headers` (lowercase names), `size`, `sha256`.
//! - Metrics: counter `fetches` by status; duration `fetch`.
//! - A refused request (a host not granted, a private address, too many
//!   requests or bytes) is a fatal error naming the host's reason; a
//!   connection or DNS failure is retryable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ward_sdk::{Context, Error, MediaRef};
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub url: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_redirects")]
    pub max_redirects: u32,
    #[serde(default)]
    pub name: Option<String>,
}

fn default_redirects() -> u32 {
    5
}

#[derive(Serialize, Debug)]
pub struct Fetched {
    pub url: String,
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub size: u64,
    pub sha256: String,
    pub redirects: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRef>,
}

/// A URL split into what a `wasi:http` request needs.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Target {
    pub https: bool,
    pub authority: String,
    pub path: String,
}

/// Parses `http[s]://authority/path?query` (no user info, no fragment).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(format!("{url:?} has no host, or a user name"));
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(Target {
        https,
        authority: authority.to_string(),
        path,
    })
}

/// Where a redirect's `Location` points, from the URL that sent it.
pub fn resolve(base: &Target, location: &str) -> Result<Target, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return parse_url(location);
    }
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = if base.https { "https" } else { "http" };
        return parse_url(&format!("{scheme}://{rest}"));
    }
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path.split('?').next().unwrap_or("/");
        let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{location}")
    };
    Ok(Target {
        path,
        ..base.clone()
    })
}

fn url_of(t: &Target) -> String {
    format!(
        "{}://{}{}",
        if t.https { "https" } else { "http" },
        t.authority,
        t.path
    )
}

/// What one request brought back.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// The host's refusals are final; a failed connection may pass later.
fn http_error(target: &Target, e: &ErrorCode) -> Error {
    let what = format!("{} {}: {e:?}", "request to", target.authority);
    match e {
        ErrorCode::HttpRequestDenied
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::HttpResponseBodySize(_)
        | ErrorCode::HttpRequestBodySize(_)
        | ErrorCode::HttpRequestUriInvalid => Error::fatal(format!(
            "{what} (refused by the host: see its http log line)"
        )),
        _ => Error::retryable(what),
    }
}

fn send(
    target: &Target,
    method: &Method,
    headers: &BTreeMap<String, String>,
) -> Result<Answer, Error> {
    let fields = Fields::new();
    for (k, v) in headers {
        fields
            .append(k, v.as_bytes())
            .map_err(|e| Error::invalid_input(format!("header {k:?}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let bad = |what: &str| Error::invalid_input(format!("cannot set the request's {what}"));
    request.set_method(method).map_err(|()| bad("method"))?;
    request
        .set_scheme(Some(if target.https {
            &Scheme::Https
        } else {
            &Scheme::Http
        }))
        .map_err(|()| bad("scheme"))?;
    request
        .set_authority(Some(&target.authority))
        .map_err(|()| bad("host"))?;
    request
        .set_path_with_query(Some(&target.path))
        .map_err(|()| bad("path"))?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| http_error(target, &e))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| Error::retryable("the response never came"))?
        .map_err(|()| Error::retryable("the response was taken twice"))?
        .map_err(|e| http_error(target, &e))?;
    let status = response.status();
    let mut seen = BTreeMap::new();
    for (k, v) in response.headers().entries() {
        seen.entry(k)
            .and_modify(|all: &mut String| {
                all.push_str(", ");
                all.push_str(&String::from_utf8_lossy(&v));
            })
            .or_insert_with(|| String::from_utf8_lossy(&v).into_owned());
    }
    let body = response
        .consume()
        .map_err(|()| Error::retryable("the response has no body"))?;
    let stream = body
        .stream()
        .map_err(|()| Error::retryable("the response body cannot be read"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                let code = wasi::http::types::http_error_code(&e);
                if let Some(code) = code {
                    return Err(http_error(target, &code));
                }
                let text = e.to_debug_string();
                let first = text.lines().next().unwrap_or_default();
                let message = format!("reading the body of {}: {first}", target.authority);
                // The host's byte budget is final; anything else may pass.
                return Err(if first.contains("size exceeds limit") {
                    Error::fatal(message)
                } else {
                    Error::retryable(message)
                });
            }
        }
    }
    drop(stream);
    Ok(Answer {
        status,
        headers: seen,
        body: bytes,
    })
}

fn fetch(ctx: &Context, input: Input) -> Result<Fetched, Error> {
    let method = match input.method.as_deref().unwrap_or("GET") {
        "GET" | "get" => Method::Get,
        "HEAD" | "head" => Method::Head,
        other => {
            return Err(Error::invalid_input(format!(
                "method {other:?}: GET or HEAD"
            )));
        }
    };
    let mut target = parse_url(&input.url).map_err(Error::invalid_input)?;
    let timer = ctx.timer("fetch");
    let mut redirects = 0;
    let answer = loop {
        let answer = send(&target, &method, &input.headers)?;
        let location = answer.headers.get("location");
        match (answer.status, location) {
            (301 | 302 | 303 | 307 | 308, Some(location)) => {
                if redirects >= input.max_redirects {
                    return Err(Error::fatal(format!(
                        "more than {} redirects (last to {location})",
                        input.max_redirects
                    )));
                }
                redirects += 1;
                target = resolve(&target, location).map_err(Error::fatal)?;
                ctx.info(format!("redirected to {}", url_of(&target)));
            }
            _ => break answer,
        }
    };
    drop(timer);
    let sha256 = hex(&Sha256::digest(&answer.body));
    let size = answer.body.len() as u64;
    let media = if answer.body.is_empty() {
        None
    } else {
        let content_type = answer
            .headers
            .get("content-type")
            .map(String::as_str)
            .unwrap_or("application/octet-stream");
        let name = input.name.as_deref().unwrap_or("body");
        Some(ctx.media(name, content_type, &answer.body)?)
    };
    ctx.output("status", &answer.status)?;
    ctx.output("headers", &answer.headers)?;
    ctx.output("size", &size)?;
    ctx.output("sha256", &sha256)?;
    ctx.counter_with("fetches", 1, &[("status", &answer.status.to_string())]);
    Ok(Fetched {
        url: url_of(&target),
        status: answer.status,
        headers: answer.headers,
        size,
        sha256,
        redirects,
        media,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

ward_sdk::action!(fetch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_path() {
        assert_eq!(
            parse_url("https://a.example.com:8443/x/y?q=1#frag").unwrap(),
            Target {
                https: true,
                authority: "a.example.com:8443".into(),
                path: "/x/y?q=1".into()
            }
        );
        assert_eq!(parse_url("http://h").unwrap().path, "/");
        assert_eq!(parse_url("http://h?x").unwrap().path, "/?x");
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("http://user@h/").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn redirects_resolve_against_the_url_that_sent_them() {
        let base = parse_url("https://h/a/b?q").unwrap();
        assert_eq!(url_of(&resolve(&base, "/c").unwrap()), "https://h/c");
        assert_eq!(url_of(&resolve(&base, "c").unwrap()), "https://h/a/c");
        assert_eq!(url_of(&resolve(&base, "//o/p").unwrap()), "https://o/p");
        assert_eq!(
            url_of(&resolve(&base, "http://127.0.0.1:1/x").unwrap()),
            "http://127.0.0.1:1/x"
        );
    }
}
