//! gRPC: the one place where a rejection becomes a gRPC status.
//!
//! A request is gRPC when its `Content-Type` is `application/grpc` or `application/grpc+<codec>`
//! ([`is_grpc`]). To such a request every layer of the workspace answers a rejection with a
//! **trailers-only** gRPC response ([`Problem::into_grpc_response`]) instead of problem+json:
//! HTTP 200, `content-type: application/grpc`, no body, and in the headers
//!
//! | metadata | value |
//! |---|---|
//! | `grpc-status` | the [`Code`] of the problem ([`Code::for_problem`], table below) |
//! | `grpc-message` | the problem's detail (or title), percent-encoded as the gRPC spec asks ([`encode_message`]) |
//! | `grpc-status-details-bin` | a `google.rpc.Status` (code, message, details) with a `google.rpc.ErrorInfo` (`reason` = the error code in upper case, `domain` = `retry-safe`, `metadata` = `error_code`, `http_status` and the problem's extension members) and, with a wait, a `google.rpc.RetryInfo` |
//! | `x-error-code` | the problem's error code as is (`rate_limited`), for clients that read no protobuf |
//! | `retry-after`, `grpc-retry-pushback-ms` | the wait, in whole seconds (rounded up) and in milliseconds, when the problem carries one |
//!
//! | HTTP status of the problem | gRPC code |
//! |---|---|
//! | 400, 415, 422 and other 4xx not below | `INVALID_ARGUMENT` |
//! | 401 | `UNAUTHENTICATED` |
//! | 403 | `PERMISSION_DENIED` |
//! | 404, 410 | `NOT_FOUND` |
//! | 405, 501 | `UNIMPLEMENTED` |
//! | 408, 504 | `DEADLINE_EXCEEDED` |
//! | 409 (a request with the key in flight, an edit conflict) | `ABORTED` (retryable) |
//! | 412, 428 | `FAILED_PRECONDITION` |
//! | 413, 429 | `RESOURCE_EXHAUSTED` |
//! | 499 | `CANCELLED` |
//! | 500 and other 5xx | `INTERNAL` |
//! | 502, 503 | `UNAVAILABLE` |
//!
//! 422 (an `Idempotency-Key` reused with another request) is `INVALID_ARGUMENT`: the client sent
//! a request that cannot succeed as it is, and must not retry it unchanged. The way back,
//! [`Code::http_status`], follows `google.rpc.Code`'s HTTP mapping; the idempotency layer uses it
//! to decide whether a gRPC answer is kept for replay.
//!
//! ```
//! use retry_safe_core::{grpc::{self, Code}, Problem};
//! use http::{HeaderMap, StatusCode};
//! use std::time::Duration;
//!
//! let mut request = HeaderMap::new();
//! request.insert("content-type", "application/grpc".parse().unwrap());
//! assert!(grpc::is_grpc(&request));
//!
//! let res: http::Response<bytes::Bytes> =
//!     Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
//!         .with_detail("20 requests per second, 100% used")
//!         .with_retry_after(Duration::from_millis(1500))
//!         .into_response_for(&request);
//! assert_eq!(res.status(), 200);
//! assert_eq!(grpc::status_of(res.headers()), Some(Code::ResourceExhausted));
//! assert_eq!(res.headers()["grpc-message"], "20 requests per second, 100%25 used");
//! assert_eq!(res.headers()["grpc-retry-pushback-ms"], "1500");
//! assert_eq!(res.headers()["retry-after"], "2");
//! assert_eq!(res.headers()["x-error-code"], "rate_limited");
//! assert!(res.body().is_empty());
//! ```

use crate::problem::{retry_after_secs, Problem};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use std::time::Duration;

/// `grpc-status`: the call's status code.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`: the status message, percent-encoded.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-status-details-bin`: a base64 `google.rpc.Status`.
pub const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
/// `grpc-retry-pushback-ms`: how long the client should wait before retrying (gRPC A6).
pub const GRPC_RETRY_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");
/// `x-error-code`: the workspace's error code of a rejection, as plain metadata.
pub const ERROR_CODE: HeaderName = HeaderName::from_static("x-error-code");
/// The `domain` of the `ErrorInfo` the layers send.
pub(crate) const ERROR_DOMAIN: &str = "retry-safe";

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(i32)]
pub enum Code {
    /// `OK` (0).
    Ok = 0,
    /// `CANCELLED` (1).
    Cancelled = 1,
    /// `UNKNOWN` (2).
    Unknown = 2,
    /// `INVALID_ARGUMENT` (3).
    InvalidArgument = 3,
    /// `DEADLINE_EXCEEDED` (4).
    DeadlineExceeded = 4,
    /// `NOT_FOUND` (5).
    NotFound = 5,
    /// `ALREADY_EXISTS` (6).
    AlreadyExists = 6,
    /// `PERMISSION_DENIED` (7).
    PermissionDenied = 7,
    /// `RESOURCE_EXHAUSTED` (8).
    ResourceExhausted = 8,
    /// `FAILED_PRECONDITION` (9).
    FailedPrecondition = 9,
    /// `ABORTED` (10).
    Aborted = 10,
    /// `OUT_OF_RANGE` (11).
    OutOfRange = 11,
    /// `UNIMPLEMENTED` (12).
    Unimplemented = 12,
    /// `INTERNAL` (13).
    Internal = 13,
    /// `UNAVAILABLE` (14).
    Unavailable = 14,
    /// `DATA_LOSS` (15).
    DataLoss = 15,
    /// `UNAUTHENTICATED` (16).
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code with number `n`; `UNKNOWN` for numbers gRPC does not define (as the spec asks).
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code's number.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code's name as the gRPC spec writes it (`RESOURCE_EXHAUSTED`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The gRPC code of a rejection with HTTP `status` (the table in the [module docs](self)).
    pub fn for_status(status: StatusCode) -> Code {
        match status.as_u16() {
            200..=299 => Code::Ok,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 | 410 => Code::NotFound,
            405 | 501 => Code::Unimplemented,
            408 | 504 => Code::DeadlineExceeded,
            409 => Code::Aborted,
            412 | 428 => Code::FailedPrecondition,
            413 | 429 => Code::ResourceExhausted,
            499 => Code::Cancelled,
            502 | 503 => Code::Unavailable,
            400..=498 => Code::InvalidArgument,
            500..=599 => Code::Internal,
            _ => Code::Unknown,
        }
    }

    /// The gRPC code of `problem`.
    pub fn for_problem(problem: &Problem) -> Code {
        Code::for_status(problem.status())
    }

    /// The HTTP status of a call that ended with this code (`google.rpc.Code`'s mapping):
    /// `OK` 200, `INVALID_ARGUMENT` / `FAILED_PRECONDITION` / `OUT_OF_RANGE` 400, `UNAUTHENTICATED`
    /// 401, `PERMISSION_DENIED` 403, `NOT_FOUND` 404, `ABORTED` / `ALREADY_EXISTS` 409,
    /// `RESOURCE_EXHAUSTED` 429, `CANCELLED` 499, `UNKNOWN` / `INTERNAL` / `DATA_LOSS` 500,
    /// `UNIMPLEMENTED` 501, `UNAVAILABLE` 503, `DEADLINE_EXCEEDED` 504.
    pub fn http_status(self) -> StatusCode {
        let n = match self {
            Code::Ok => 200,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::Aborted | Code::AlreadyExists => 409,
            Code::ResourceExhausted => 429,
            Code::Cancelled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::DeadlineExceeded => 504,
        };
        StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `headers` (of a request or a response) say gRPC: `Content-Type` `application/grpc`
/// or `application/grpc+<codec>` (case-insensitive, parameters ignored). gRPC-Web
/// (`application/grpc-web…`) is not gRPC here: it carries trailers in its body.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = ct.split(';').next().unwrap_or("").trim();
    let Some(prefix) = media.get(..16) else {
        return false;
    };
    prefix.eq_ignore_ascii_case("application/grpc")
        && (media.len() == 16 || media.as_bytes()[16] == b'+')
}

/// The `grpc-status` in `headers` (trailers-only responses carry it there), if any.
pub fn status_of(headers: &HeaderMap) -> Option<Code> {
    let v = headers.get(GRPC_STATUS)?.to_str().ok()?;
    v.trim().parse::<i32>().ok().map(Code::from_i32)
}

/// What the gRPC spec asks to percent-encode in `grpc-message`: every byte outside 0x20–0x7E,
/// and `%` itself.
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// `message` percent-encoded for `grpc-message`: UTF-8, bytes outside 0x20–0x7E and `%` as `%XX`.
pub fn encode_message(message: &str) -> String {
    utf8_percent_encode(message, MESSAGE).to_string()
}

/// A `grpc-message` decoded; invalid UTF-8 is replaced, malformed escapes are kept as sent.
pub fn decode_message(value: &str) -> String {
    percent_decode_str(value).decode_utf8_lossy().into_owned()
}

impl Problem {
    /// The gRPC code of this problem ([`Code::for_problem`]).
    pub fn grpc_code(&self) -> Code {
        Code::for_problem(self)
    }

    /// The problem as a trailers-only gRPC response (the [module docs](self) list its metadata).
    pub fn into_grpc_response<B: From<Bytes>>(self) -> Response<B> {
        let code = self.grpc_code();
        let message = self.detail().unwrap_or(self.title()).to_owned();
        let mut res = Response::new(B::from(Bytes::new()));
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(GRPC_STATUS, HeaderValue::from(code.as_i32()));
        if let Ok(v) = HeaderValue::from_str(&encode_message(&message)) {
            headers.insert(GRPC_MESSAGE, v);
        }
        let details = status_details(&self, code, &message);
        let details = base64::engine::general_purpose::STANDARD_NO_PAD.encode(details);
        if let Ok(v) = HeaderValue::from_str(&details) {
            headers.insert(GRPC_STATUS_DETAILS, v);
        }
        if let Ok(v) = HeaderValue::from_str(self.code()) {
            headers.insert(ERROR_CODE, v);
        }
        if let Some(after) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, retry_after_secs(after).into());
            let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
            headers.insert(GRPC_RETRY_PUSHBACK, ms.into());
        }
        res
    }

    /// The response for a request with `request_headers`: a trailers-only gRPC response when the
    /// request is gRPC ([`is_grpc`]), problem+json otherwise.
    pub fn into_response_for<B: From<Bytes>>(self, request_headers: &HeaderMap) -> Response<B> {
        self.into_response_if_grpc(is_grpc(request_headers))
    }

    /// A trailers-only gRPC response when `grpc` (the request was gRPC, [`is_grpc`] read
    /// earlier), problem+json otherwise.
    pub fn into_response_if_grpc<B: From<Bytes>>(self, grpc: bool) -> Response<B> {
        if grpc {
            self.into_grpc_response()
        } else {
            self.into_response()
        }
    }
}

/// The serialized `google.rpc.Status` of `problem`.
fn status_details(problem: &Problem, code: Code, message: &str) -> Vec<u8> {
    let mut info = Vec::new();
    put_string(&mut info, 1, &problem.code().to_ascii_uppercase());
    put_string(&mut info, 2, ERROR_DOMAIN);
    let mut entry = |key: &str, value: &str| {
        let mut e = Vec::new();
        put_string(&mut e, 1, key);
        put_string(&mut e, 2, value);
        put_bytes(&mut info, 3, &e);
    };
    entry("error_code", problem.code());
    entry("http_status", &problem.status().as_u16().to_string());
    for (name, value) in problem.extensions() {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        entry(name, &text);
    }
    let mut status = Vec::new();
    put_varint_field(&mut status, 1, code.as_i32() as u64);
    put_string(&mut status, 2, message);
    put_bytes(
        &mut status,
        3,
        &any("type.googleapis.com/google.rpc.ErrorInfo", &info),
    );
    if let Some(after) = problem.retry_after() {
        let mut duration = Vec::new();
        put_varint_field(&mut duration, 1, after.as_secs());
        put_varint_field(&mut duration, 2, u64::from(after.subsec_nanos()));
        let mut retry = Vec::new();
        put_bytes(&mut retry, 1, &duration);
        put_bytes(
            &mut status,
            3,
            &any("type.googleapis.com/google.rpc.RetryInfo", &retry),
        );
    }
    status
}

/// A `google.protobuf.Any`.
fn any(type_url: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_string(&mut out, 1, type_url);
    put_bytes(&mut out, 2, value);
    out
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A varint field; zero is the default and is left out, as proto3 does.
fn put_varint_field(out: &mut Vec<u8>, field: u64, n: u64) {
    if n != 0 {
        put_varint(out, field << 3);
        put_varint(out, n);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_string(out: &mut Vec<u8>, field: u64, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

/// The wait a gRPC response asks for in `grpc-retry-pushback-ms` (gRPC A6), if any. (Its
/// `retry-after` is read by [`headers::retry_after`](crate::headers::retry_after).)
pub fn pushback(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(GRPC_RETRY_PUSHBACK)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_request() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        h
    }

    #[test]
    fn detection() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("Application/GRPC+proto"));
        assert!(with("application/grpc; charset=utf-8"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/grpcx"));
        assert!(!with("application/json"));
        assert!(!with("application/grp"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    /// The mapping table of the module docs (and docs/grpc.md), row by row.
    #[test]
    fn mapping_table() {
        let rows: [(u16, Code); 27] = [
            (400, Code::InvalidArgument),
            (415, Code::InvalidArgument),
            (422, Code::InvalidArgument),
            (418, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (410, Code::NotFound),
            (405, Code::Unimplemented),
            (501, Code::Unimplemented),
            (408, Code::DeadlineExceeded),
            (504, Code::DeadlineExceeded),
            (409, Code::Aborted),
            (412, Code::FailedPrecondition),
            (428, Code::FailedPrecondition),
            (413, Code::ResourceExhausted),
            (429, Code::ResourceExhausted),
            (499, Code::Cancelled),
            (500, Code::Internal),
            (507, Code::Internal),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (200, Code::Ok),
            (201, Code::Ok),
            (100, Code::Unknown),
            (302, Code::Unknown),
            (600, Code::Unknown),
        ];
        for (status, code) in rows {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(Code::for_status(status), code, "{status}");
            let problem = Problem::new(status, "x", "X");
            let res: Response<Bytes> = problem.into_grpc_response();
            assert_eq!(status_of(res.headers()), Some(code), "{status}");
        }
    }

    #[test]
    fn codes_round_trip_and_unknown_numbers() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(code.as_i32(), i as i32);
            assert_eq!(Code::from_i32(i as i32), *code);
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::ResourceExhausted.to_string(), "RESOURCE_EXHAUSTED");
        // The way back keeps what the idempotency layer needs: retryable codes are not 2xx–4xx
        // "final" answers, except the ones a retry can fix (409 / 429).
        assert_eq!(Code::Unavailable.http_status(), 503);
        assert_eq!(Code::Aborted.http_status(), 409);
        assert_eq!(Code::ResourceExhausted.http_status(), 429);
        assert_eq!(Code::InvalidArgument.http_status(), 400);
        assert_eq!(Code::Ok.http_status(), 200);
        assert_eq!(Code::Internal.http_status(), 500);
    }

    #[test]
    fn message_encoding() {
        assert_eq!(encode_message("plain text"), "plain text");
        assert_eq!(encode_message("100% sure"), "100%25 sure");
        assert_eq!(encode_message("a\nb"), "a%0Ab");
        assert_eq!(encode_message("café"), "caf%C3%A9");
        for s in ["100% sure", "a\nb\tc", "café ☕", "%%", ""] {
            assert_eq!(decode_message(&encode_message(s)), s);
        }
        assert_eq!(decode_message("bad %zz escape"), "bad %zz escape");
    }

    #[test]
    fn json_for_http_grpc_for_grpc() {
        let problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded")
            .with_retry_after(Duration::from_secs(1));
        let http: Response<Bytes> = problem.clone().into_response_for(&HeaderMap::new());
        assert_eq!(http.status(), 503);
        assert_eq!(http.headers()["content-type"], crate::PROBLEM_JSON);
        let grpc: Response<Bytes> = problem.into_response_for(&grpc_request());
        assert_eq!(grpc.status(), 200);
        assert_eq!(grpc.headers()["content-type"], "application/grpc");
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(grpc.headers()["grpc-message"], "Overloaded");
        assert_eq!(grpc.headers()["grpc-retry-pushback-ms"], "1000");
        assert_eq!(pushback(grpc.headers()), Some(Duration::from_secs(1)));
        assert!(grpc.body().is_empty());
    }

    #[test]
    fn status_details_bytes() {
        // A small case, encoded by hand from the proto definitions.
        let problem = Problem::new(StatusCode::CONFLICT, "busy", "Busy");
        let res: Response<Bytes> = problem.into_grpc_response();
        let details = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(res.headers()["grpc-status-details-bin"].as_bytes())
            .unwrap();
        let mut info = vec![0x0a, 4];
        info.extend_from_slice(b"BUSY");
        info.extend_from_slice(&[0x12, 10]);
        info.extend_from_slice(b"retry-safe");
        let entry = |k: &str, v: &str| {
            let mut e = vec![0x0a, k.len() as u8];
            e.extend_from_slice(k.as_bytes());
            e.extend_from_slice(&[0x12, v.len() as u8]);
            e.extend_from_slice(v.as_bytes());
            e
        };
        for e in [entry("error_code", "busy"), entry("http_status", "409")] {
            info.extend_from_slice(&[0x1a, e.len() as u8]);
            info.extend_from_slice(&e);
        }
        let url = b"type.googleapis.com/google.rpc.ErrorInfo";
        let mut any = vec![0x0a, url.len() as u8];
        any.extend_from_slice(url);
        any.extend_from_slice(&[0x12, info.len() as u8]);
        any.extend_from_slice(&info);
        let mut status = vec![0x08, 10, 0x12, 4];
        status.extend_from_slice(b"Busy");
        status.extend_from_slice(&[0x1a, any.len() as u8]);
        status.extend_from_slice(&any);
        assert_eq!(details, status);
    }
}
