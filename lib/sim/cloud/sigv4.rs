//! Verification of AWS Signature Version 4 (`AWS4-HMAC-SHA256`), as the Outscale API and its
//! SDKs use it (service `oapi`, headers `host;x-amz-date`, payload hash over the exact body).
//!
//! The canonical request is recomputed from what was *received* — method, path, query, the
//! signed headers' values and the body — so any difference between what the client signed and
//! what it sent fails, as on the real platform. The signature is compared in constant time.
//! A request stamped more than [`MAX_SKEW_MS`] away from the server's clock is refused.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::clock;
use super::errors::ApiError;

/// Largest accepted distance between `X-Amz-Date` and the server clock.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// The signing service name the Outscale SDKs use.
pub const SERVICE: &str = "oapi";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

type HmacSha256 = Hmac<Sha256>;

/// What was received, as the signature covers it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Raw (still percent-encoded) path.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Body bytes.
    pub body: &'a [u8],
}

/// The parts of an `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(v: &str) -> Result<Authorization<'_>, String> {
    let rest = v
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| format!("the Authorization header does not use {ALGORITHM}"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, val) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("malformed Authorization component '{}'", part.trim()))?;
        match k {
            "Credential" => credential = Some(val),
            "SignedHeaders" => signed = Some(val),
            "Signature" => signature = Some(val),
            _ => return Err(format!("unknown Authorization component '{k}'")),
        }
    }
    let credential = credential.ok_or("the Authorization header has no Credential")?;
    let signed = signed.ok_or("the Authorization header has no SignedHeaders")?;
    let signature = signature.ok_or("the Authorization header has no Signature")?;
    let c: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminator] = c[..] else {
        return Err(format!("malformed Credential '{credential}'"));
    };
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        terminator,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when asked), the
/// way the AWS signer does.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 dot-segment removal, as the signer normalises paths.
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s if s.is_empty() && i != 0 && i != segments.len() - 1 => {}
            s => out.push(s),
        }
    }
    let mut p = out.join("/");
    if !p.starts_with('/') {
        p.insert(0, '/');
    }
    p
}

fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&form_decode(k), false),
                uri_encode(&form_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn header_value(headers: &HeaderMap, name: &str) -> Result<String, String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            let s = String::from_utf8_lossy(v.as_bytes());
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    if values.is_empty() {
        return Err(format!(
            "signed header '{name}' is missing from the request"
        ));
    }
    Ok(values.join(","))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The canonical request for `req` over `signed_headers` (already lowercase, sorted).
fn canonical_request(req: &Received<'_>, signed_headers: &[&str]) -> Result<String, String> {
    let mut headers = String::new();
    for h in signed_headers {
        headers.push_str(h);
        headers.push(':');
        headers.push_str(&header_value(req.headers, h)?);
        headers.push('\n');
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri_encode(&normalize_path(req.path), true),
        canonical_query(req.query),
        headers,
        signed_headers.join(";"),
        hex::encode(Sha256::digest(req.body)),
    ))
}

/// Verifies the request's signature against the keys (`secret_of`) and region; returns the
/// access key used. Every failure is a 401 naming what is wrong (never the secret).
pub fn verify(
    req: &Received<'_>,
    secret_of: impl Fn(&str) -> Option<String>,
    region: &str,
    now_ms: u64,
) -> Result<String, ApiError> {
    let auth = req
        .headers
        .get("authorization")
        .ok_or_else(|| ApiError::auth("the request is not signed (no Authorization header)"))?
        .to_str()
        .map_err(|_| ApiError::auth("the Authorization header is not ASCII"))?;
    let a = parse_authorization(auth).map_err(ApiError::auth)?;
    let secret = secret_of(a.access_key)
        .ok_or_else(|| ApiError::auth(format!("unknown access key '{}'", a.access_key)))?;
    if a.region != region || a.service != SERVICE || a.terminator != "aws4_request" {
        return Err(ApiError::auth(format!(
            "credential scope {}/{}/{} does not match {region}/{SERVICE}/aws4_request",
            a.region, a.service, a.terminator
        )));
    }
    let mut sorted = a.signed_headers.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted != a.signed_headers
        || a.signed_headers
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err(ApiError::auth(
            "SignedHeaders must be lowercase, sorted and unique",
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !a.signed_headers.contains(&required) {
            return Err(ApiError::auth(format!(
                "SignedHeaders must include '{required}'"
            )));
        }
    }
    let stamp = header_value(req.headers, "x-amz-date").map_err(ApiError::auth)?;
    let stamp_ms = clock::parse_amz_date(&stamp)
        .ok_or_else(|| ApiError::auth(format!("malformed X-Amz-Date '{stamp}'")))?;
    if !stamp.starts_with(a.date) || a.date.len() != 8 {
        return Err(ApiError::auth(format!(
            "credential date {} does not match X-Amz-Date {stamp}",
            a.date
        )));
    }
    if stamp_ms.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(ApiError::auth(format!(
            "the request time {stamp} is more than 5 minutes away from the server time {}",
            clock::amz_date(now_ms)
        )));
    }
    let creq = canonical_request(req, &a.signed_headers).map_err(ApiError::auth)?;
    let scope = format!("{}/{}/{}/aws4_request", a.date, a.region, a.service);
    let to_sign = format!(
        "{ALGORITHM}\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(creq.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), a.date.as_bytes());
    for part in [a.region, a.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let given =
        hex::decode(a.signature).map_err(|_| ApiError::auth("the Signature is not hexadecimal"))?;
    let mut m = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
    m.update(to_sign.as_bytes());
    m.verify_slice(&given).map_err(|_| {
        ApiError::auth(
            "the request signature does not match (wrong secret key, or the request was altered)",
        )
    })?;
    Ok(a.access_key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use outscale_api::apis::configuration::AWSv4Key;

    /// Signs like the real SDK (aws-sigv4 through outscale_api) and builds the headers a
    /// client would send.
    fn signed(url: &str, body: &str, ak: &str, sk: &str) -> HeaderMap {
        let key = AWSv4Key {
            access_key: ak.into(),
            secret_key: sk.to_string().into(),
            region: "eu-west-2".into(),
            service: "oapi".into(),
        };
        let mut h = HeaderMap::new();
        for (k, v) in key.sign(url, "POST", body).unwrap() {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        let host = url.split('/').nth(2).unwrap();
        h.insert("host", HeaderValue::from_str(host).unwrap());
        h
    }

    fn secret(ak: &str) -> Option<String> {
        (ak == "AK1").then(|| "SK1".to_string())
    }

    fn check(h: &HeaderMap, path: &str, body: &str, now: u64) -> Result<String, ApiError> {
        verify(
            &Received {
                method: "POST",
                path,
                query: None,
                headers: h,
                body: body.as_bytes(),
            },
            secret,
            "eu-west-2",
            now,
        )
    }

    #[test]
    fn sdk_signature_verifies() {
        let body = r#"{"SubregionName":"eu-west-2a","Size":1}"#;
        let h = signed(
            "http://127.0.0.1:4567/api/v1/CreateVolume",
            body,
            "AK1",
            "SK1",
        );
        let now = clock::now_ms();
        assert_eq!(check(&h, "/api/v1/CreateVolume", body, now).unwrap(), "AK1");
    }

    #[test]
    fn tampering_and_bad_keys_fail() {
        let body = r#"{"VolumeId":"vol-00000001"}"#;
        let url = "http://127.0.0.1:4567/api/v1/DeleteVolume";
        let now = clock::now_ms();
        let h = signed(url, body, "AK1", "SK1");
        let e = check(
            &h,
            "/api/v1/DeleteVolume",
            r#"{"VolumeId":"vol-00000002"}"#,
            now,
        );
        assert_eq!(e.unwrap_err().status, 401);
        let e = check(&h, "/api/v1/ReadVolumes", body, now).unwrap_err();
        assert!(e.details.contains("does not match"), "{e}");
        let e = check(
            &signed(url, body, "AK1", "nope"),
            "/api/v1/DeleteVolume",
            body,
            now,
        )
        .unwrap_err();
        assert!(e.details.contains("signature"), "{e}");
        let e = check(
            &signed(url, body, "AK2", "SK1"),
            "/api/v1/DeleteVolume",
            body,
            now,
        )
        .unwrap_err();
        assert!(e.details.contains("unknown access key 'AK2'"), "{e}");
        let mut other_host = h.clone();
        other_host.insert("host", HeaderValue::from_static("127.0.0.1:9999"));
        assert!(check(&other_host, "/api/v1/DeleteVolume", body, now).is_err());
        assert!(check(&HeaderMap::new(), "/api/v1/DeleteVolume", body, now).is_err());
    }

    #[test]
    fn stale_or_future_timestamps_fail() {
        let body = "{}";
        let h = signed("http://127.0.0.1:1/api/v1/ReadVms", body, "AK1", "SK1");
        let now = clock::now_ms();
        assert!(check(&h, "/api/v1/ReadVms", body, now + 4 * 60 * 1000).is_ok());
        let e = check(&h, "/api/v1/ReadVms", body, now + 6 * 60 * 1000).unwrap_err();
        assert!(e.details.contains("5 minutes"), "{e}");
        assert!(check(&h, "/api/v1/ReadVms", body, now - 6 * 60 * 1000).is_err());
    }

    #[test]
    fn encoding_helpers_follow_the_signer() {
        assert_eq!(uri_encode("/api/v1/A b", true), "/api/v1/A%20b");
        assert_eq!(uri_encode("a/b~", false), "a%2Fb~");
        assert_eq!(canonical_query(Some("b=2&a=x+y&c")), "a=x%20y&b=2&c=");
        assert_eq!(normalize_path("/api/./v1/../v1/X"), "/api/v1/X");
        assert_eq!(form_decode("%41%zz%"), "A%zz%");
    }
}
