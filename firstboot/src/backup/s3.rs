//! A small client of an S3-compatible object store, for copying backups
//! off the cluster: path-style requests (`https://HOST/BUCKET/KEY`) signed
//! with AWS Signature Version 4, over TLS that trusts only the CA the
//! backup policy names. Four operations: put an object, read one back
//! (hashed, never kept), list a prefix, delete an object.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use globular_cluster::backup::policy::S3Target;
use ring::hmac;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// How long one request may take: an archive is sent or read in one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Most objects one listing returns (S3's own maximum).
const MAX_KEYS: usize = 1000;

/// One bucket of an object store.
pub struct Bucket {
    http: reqwest::Client,
    /// `https://HOST[:PORT]`.
    endpoint: String,
    /// `HOST[:PORT]`, as signed.
    host: String,
    bucket: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
}

/// An object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub last_modified: OffsetDateTime,
}

impl Bucket {
    pub fn new(target: &S3Target) -> anyhow::Result<Bucket> {
        let host = target
            .endpoint
            .strip_prefix("https://")
            .context("the S3 endpoint is not https://")?
            .trim_end_matches('/')
            .to_owned();
        let config = globular_substrate::tls::client_config(&target.ca, None)
            .context("the S3 endpoint's CA")?;
        Ok(Bucket {
            http: globular_substrate::tls::http_client(config)?,
            endpoint: format!("https://{host}"),
            host,
            bucket: target.bucket.clone(),
            region: target.region.clone(),
            access_key_id: target.access_key_id.clone(),
            secret_access_key: target.secret_access_key.clone(),
        })
    }

    /// Uploads `file` as `key`; `sha256` is the file's (hex), signed with
    /// the request, so the store refuses a body that differs from it.
    pub async fn put_file(&self, key: &str, file: &Path, sha256: &str) -> anyhow::Result<()> {
        let body = tokio::fs::read(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        self.send(reqwest::Method::PUT, key, &[], sha256, Some(body))
            .await?;
        Ok(())
    }

    /// Reads `key` back: its SHA-256 (hex) and size.
    pub async fn hash_object(&self, key: &str) -> anyhow::Result<(String, u64)> {
        let mut response = self
            .send(reqwest::Method::GET, key, &[], EMPTY_SHA256, None)
            .await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("reading {key}"))?
        {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// The objects whose keys start with `prefix` (at most 1000).
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<Object>> {
        let max_keys = MAX_KEYS.to_string();
        let query = [
            ("list-type", "2"),
            ("max-keys", max_keys.as_str()),
            ("prefix", prefix),
        ];
        let response = self
            .send(reqwest::Method::GET, "", &query, EMPTY_SHA256, None)
            .await?;
        let text = response.text().await.context("reading the listing")?;
        parse_listing(&text)
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.send(reqwest::Method::DELETE, key, &[], EMPTY_SHA256, None)
            .await?;
        Ok(())
    }

    /// One signed request; an answer that is not 2xx is an error with
    /// the store's message.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        payload_sha256: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<reqwest::Response> {
        let path = if key.is_empty() {
            format!("/{}", uri_encode(&self.bucket, false))
        } else {
            format!(
                "/{}/{}",
                uri_encode(&self.bucket, false),
                uri_encode(key, true)
            )
        };
        let query = canonical_query(query);
        let now = OffsetDateTime::now_utc();
        let request = SignedRequest {
            method: method.as_str(),
            path: &path,
            query: &query,
            host: &self.host,
            payload_sha256,
            headers: &[],
        };
        let (amz_date, authorization) = request.authorization(
            now,
            &self.region,
            &self.access_key_id,
            &self.secret_access_key,
        );
        let url = if query.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{query}", self.endpoint)
        };
        let mut builder = self
            .http
            .request(method.clone(), &url)
            .timeout(REQUEST_TIMEOUT)
            .header("x-amz-date", amz_date)
            .header("x-amz-content-sha256", payload_sha256)
            .header("authorization", authorization);
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let response = builder
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message: String = text.chars().take(500).collect();
            bail!("{method} {url}: {status}: {}", message.trim());
        }
        Ok(response)
    }
}

/// SHA-256 of nothing: the payload hash of a request without a body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What Signature Version 4 signs of a request.
struct SignedRequest<'a> {
    method: &'a str,
    /// The URI-encoded path.
    path: &'a str,
    /// The canonical query string.
    query: &'a str,
    host: &'a str,
    payload_sha256: &'a str,
    /// More headers to sign (lowercase names).
    headers: &'a [(&'a str, &'a str)],
}

impl SignedRequest<'_> {
    /// The `x-amz-date` value and the `Authorization` header.
    fn authorization(
        &self,
        at: OffsetDateTime,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> (String, String) {
        let date = format!("{:04}{:02}{:02}", at.year(), u8::from(at.month()), at.day());
        let amz_date = format!(
            "{date}T{:02}{:02}{:02}Z",
            at.hour(),
            at.minute(),
            at.second()
        );
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", self.host),
            ("x-amz-content-sha256", self.payload_sha256),
            ("x-amz-date", &amz_date),
        ];
        headers.extend_from_slice(self.headers);
        headers.sort();
        let canonical_headers: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(";");
        let canonical_request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
            self.method, self.path, self.query, self.payload_sha256
        );
        let scope = format!("{date}/{region}/s3/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = format!("AWS4{secret_access_key}").into_bytes();
        for part in [date.as_str(), region, "s3", "aws4_request"] {
            key = sign(&key, part.as_bytes());
        }
        let signature = hex::encode(sign(&key, string_to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
        );
        (amz_date, authorization)
    }
}

fn sign(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// Percent-encoding as Signature Version 4 wants it: everything but
/// `A-Za-z0-9-._~` (and `/` in a key's path).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&...`, encoded and sorted.
fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The objects of a `ListObjectsV2` answer. The store is trusted (TLS to a
/// pinned CA), but its answer is still parsed without panicking: a
/// malformed one is an error.
fn parse_listing(xml: &str) -> anyhow::Result<Vec<Object>> {
    if !xml.contains("<ListBucketResult") {
        bail!(
            "not a ListBucketResult: {}",
            xml.chars().take(200).collect::<String>()
        );
    }
    let mut objects = Vec::new();
    let mut rest = xml;
    while let Some((contents, after)) = element(rest, "Contents") {
        rest = after;
        let field = |name: &str| {
            element(contents, name)
                .map(|(v, _)| unescape(v))
                .with_context(|| format!("a listed object without <{name}>"))
        };
        let key = field("Key")?;
        let size = field("Size")?
            .parse()
            .with_context(|| format!("{key}: a bad <Size>"))?;
        let last_modified = OffsetDateTime::parse(
            &field("LastModified")?,
            &time::format_description::well_known::Rfc3339,
        )
        .with_context(|| format!("{key}: a bad <LastModified>"))?;
        objects.push(Object {
            key,
            size,
            last_modified,
        });
    }
    Ok(objects)
}

/// The text of the first `<name>...</name>` in `xml`, and what follows it.
fn element<'a>(xml: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some((&xml[start..start + len], &xml[start + len + close.len()..]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of AWS's Signature Version 4 documentation for S3
    /// ("GET Object": examplebucket, test.txt, a Range header).
    #[test]
    fn signs_as_aws_documents() {
        let at = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        let request = SignedRequest {
            method: "GET",
            path: "/test.txt",
            query: "",
            host: "examplebucket.s3.amazonaws.com",
            payload_sha256: EMPTY_SHA256,
            headers: &[("range", "bytes=0-9")],
        };
        let (date, authorization) = request.authorization(
            at,
            "us-east-1",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(date, "20130524T000000Z");
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn encodes_keys_and_queries() {
        assert_eq!(
            uri_encode("prod/a b+c.gbackup", true),
            "prod/a%20b%2Bc.gbackup"
        );
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(
            canonical_query(&[("prefix", "prod/"), ("list-type", "2")]),
            "list-type=2&prefix=prod%2F"
        );
    }

    #[test]
    fn parses_listings_and_refuses_broken_ones() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<Contents><Key>p/a&amp;b.gbackup</Key><LastModified>2026-12-04T17:00:00.000Z</LastModified><Size>12</Size></Contents>
<Contents><Key>p/c.gbackup</Key><LastModified>2026-12-04T18:00:00Z</LastModified><Size>3</Size></Contents>
</ListBucketResult>"#;
        let objects = parse_listing(xml).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].key, "p/a&b.gbackup");
        assert_eq!(objects[0].size, 12);
        assert!(objects[1].last_modified > objects[0].last_modified);
        for bad in [
            "",
            "<Error/>",
            "<ListBucketResult><Contents><Key>x</Key></Contents>",
            "<ListBucketResult><Contents><Key>x</Key><Size>z</Size><LastModified>2026-12-04T18:00:00Z</LastModified></Contents>",
            "<ListBucketResult><Contents><Key>x</Key><Size>1</Size><LastModified>yesterday</LastModified></Contents>",
        ] {
            assert!(parse_listing(bad).is_err(), "{bad}");
        }
        // Truncated anywhere: an error or fewer objects, never a panic.
        for end in 0..xml.len() {
            if xml.is_char_boundary(end) {
                let _ = parse_listing(&xml[..end]);
            }
        }
    }
}
