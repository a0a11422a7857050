//! Where current versions come from ([`VersionSource`]), the write-time conflict ([`Conflict`]),
//! and the in-memory versioned map with its compare-and-set ([`VersionedMap`]).

use crate::{Current, Expected, Version};
use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use parking_lot::Mutex;
use retry_safe_core::{BoxError, Clock, Problem, SystemClock};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// The seam the layer reads the target's current version through. The application implements it
/// over its own storage (a `SELECT version, updated_at … WHERE id = $1`); [`VersionedMap::source`]
/// is the in-memory implementation.
#[async_trait]
pub trait VersionSource: Send + Sync + 'static {
    /// The current state of the resource `parts` targets; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// A backend failure; the layer answers 503 and does not run the handler.
    async fn current(&self, parts: &http::request::Parts) -> Result<Option<Current>, BoxError>;

    /// The same answer when it needs no I/O (a version kept in memory), so the layer neither
    /// boxes a future nor clones its inner service for it; `None` (the default) when it must be
    /// awaited through [`current`](VersionSource::current).
    fn current_now(
        &self,
        parts: &http::request::Parts,
    ) -> Option<Result<Option<Current>, BoxError>> {
        let _ = parts;
        None
    }
}

#[async_trait]
impl<S: VersionSource + ?Sized> VersionSource for Arc<S> {
    async fn current(&self, parts: &http::request::Parts) -> Result<Option<Current>, BoxError> {
        (**self).current(parts).await
    }

    fn current_now(
        &self,
        parts: &http::request::Parts,
    ) -> Option<Result<Option<Current>, BoxError>> {
        (**self).current_now(parts)
    }
}

/// A write that lost the race: the resource is no longer at the expected version. Answer it with
/// [`Conflict::into_response`], the same `412` the layer gives a stale `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the resource changed since its version was checked (now {current:?})")]
#[non_exhaustive]
pub struct Conflict {
    /// The version found at write time (`None`: the resource does not exist).
    pub current: Option<Version>,
}

impl Conflict {
    /// A conflict with the version found at write time.
    pub fn new(current: Option<Version>) -> Self {
        Self { current }
    }

    /// `412 Precondition Failed` problem+json with the current `ETag`, when there is one.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        precondition_failed(self.current.as_ref())
    }

    /// The same answer for a request with `request_headers`: a trailers-only gRPC
    /// `FAILED_PRECONDITION` (the current `ETag` in the metadata) when the request is gRPC.
    pub fn into_response_for<B: From<Bytes>>(
        self,
        request_headers: &http::HeaderMap,
    ) -> Response<B> {
        precondition_failed_as(
            self.current.as_ref(),
            retry_safe_core::grpc::is_grpc(request_headers),
        )
    }
}

/// The `412` response: problem+json `precondition_failed`, with the current `ETag` so the client
/// can fetch the resource again and retry on the new version.
pub fn precondition_failed<B: From<Bytes>>(current: Option<&Version>) -> Response<B> {
    precondition_failed_as(current, false)
}

/// [`precondition_failed`], as a trailers-only gRPC response when `grpc`.
pub(crate) fn precondition_failed_as<B: From<Bytes>>(
    current: Option<&Version>,
    grpc: bool,
) -> Response<B> {
    let detail = match current {
        Some(v) => format!(
            "the resource is at version {}; fetch it again and retry with If-Match: {}",
            v.etag(),
            v.etag()
        ),
        None => "the precondition does not hold for the resource's current state".to_owned(),
    };
    let mut problem = Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "Precondition failed",
    )
    .with_detail(detail);
    if let Some(v) = current {
        problem = problem.with("current_etag", v.etag().to_string());
    }
    let mut res: Response<B> = problem.into_response_if_grpc(grpc);
    if let Some(v) = current {
        res.headers_mut()
            .insert(header::ETAG, v.etag().to_header_value());
    }
    res
}

/// An in-memory table of values with version numbers: the embedded backend for the layer's reads
/// ([`VersionedMap::source`]) and the handlers' compare-and-set writes. Clones share the table.
///
/// ```
/// use optimistic_lock::{Expected, Version, VersionedMap};
///
/// let orders: VersionedMap<String, u32> = VersionedMap::new();
/// let v1 = orders.compare_and_set("ord_1", &Expected::Absent, 2).unwrap();
/// assert_eq!(v1, Version::number(1));
/// // Two clients read version 1; the first write wins, the second is refused.
/// assert!(orders.compare_and_set("ord_1", &Expected::Version(v1.clone()), 3).is_ok());
/// let lost = orders.compare_and_set("ord_1", &Expected::Version(v1), 5).unwrap_err();
/// assert_eq!(lost.current, Some(Version::number(2)));
/// assert_eq!(orders.get("ord_1").unwrap().0, 3);
/// ```
pub struct VersionedMap<K, V, C = SystemClock> {
    rows: Arc<Mutex<HashMap<K, Row<V>>>>,
    clock: C,
}

struct Row<V> {
    value: V,
    version: u64,
    modified: std::time::SystemTime,
}

impl<K, V, C: Clone> Clone for VersionedMap<K, V, C> {
    fn clone(&self) -> Self {
        Self {
            rows: self.rows.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<K, V, C> std::fmt::Debug for VersionedMap<K, V, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedMap")
            .field("rows", &self.rows.lock().len())
            .finish()
    }
}

impl<K: Hash + Eq, V: Clone> Default for VersionedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V: Clone> VersionedMap<K, V> {
    /// An empty map on the system clock (for `Last-Modified`).
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new())
    }
}

impl<K: Hash + Eq, V: Clone, C: Clock + Clone> VersionedMap<K, V, C> {
    /// An empty map whose modification dates come from `clock`'s wall time.
    pub fn with_clock(clock: C) -> Self {
        Self {
            rows: Arc::default(),
            clock,
        }
    }

    fn now(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + self.clock.unix_time()
    }

    /// The value and its version.
    pub fn get<Q>(&self, key: &Q) -> Option<(V, Version)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let rows = self.rows.lock();
        rows.get(key)
            .map(|r| (r.value.clone(), Version::number(r.version)))
    }

    /// The current state (version and modification date), as the layer reads it.
    pub fn current<Q>(&self, key: &Q) -> Option<Current>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let rows = self.rows.lock();
        rows.get(key)
            .map(|r| Current::new(Version::number(r.version)).modified_at(r.modified))
    }

    /// Writes `value` if the row is as `expected` says (one atomic step): `Version(v)` → the row
    /// is at `v`; `Absent` → there is no row; `Unconditional` → always. Returns the new version
    /// (the old one plus one; 1 for a new row).
    ///
    /// # Errors
    /// [`Conflict`] with the version found when the row is not as expected.
    pub fn compare_and_set(
        &self,
        key: impl Into<K>,
        expected: &Expected,
        value: V,
    ) -> Result<Version, Conflict> {
        let key = key.into();
        let now = self.now();
        let mut rows = self.rows.lock();
        let found = rows.get(&key).map(|r| r.version);
        let ok = match (expected, found) {
            (Expected::Unconditional, _) => true,
            (Expected::Absent, None) => true,
            (Expected::Version(v), Some(n)) => v.as_number() == Some(n),
            _ => false,
        };
        if !ok {
            return Err(Conflict::new(found.map(Version::number)));
        }
        let version = found.map_or(1, |n| n + 1);
        rows.insert(
            key,
            Row {
                value,
                version,
                modified: now,
            },
        );
        Ok(Version::number(version))
    }

    /// Removes the row if it is as `expected` says.
    ///
    /// # Errors
    /// [`Conflict`] with the version found when the row is not as expected (or is absent).
    pub fn remove_if<Q>(&self, key: &Q, expected: &Expected) -> Result<V, Conflict>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut rows = self.rows.lock();
        let found = rows.get(key).map(|r| r.version);
        let ok = match (expected, found) {
            (_, None) => false,
            (Expected::Unconditional, Some(_)) => true,
            (Expected::Version(v), Some(n)) => v.as_number() == Some(n),
            _ => false,
        };
        if !ok {
            return Err(Conflict::new(found.map(Version::number)));
        }
        rows.remove(key)
            .map(|row| row.value)
            .ok_or(Conflict::new(None))
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.lock().len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A [`VersionSource`] over this map: `key` maps a request to its row (`None`: no row).
    pub fn source<F>(&self, key: F) -> MapSource<K, V, C, F>
    where
        F: Fn(&http::request::Parts) -> Option<K> + Send + Sync + 'static,
    {
        MapSource {
            map: self.clone(),
            key,
        }
    }
}

/// The [`VersionSource`] of a [`VersionedMap`] (see [`VersionedMap::source`]).
pub struct MapSource<K, V, C, F> {
    map: VersionedMap<K, V, C>,
    key: F,
}

impl<K, V, C, F> std::fmt::Debug for MapSource<K, V, C, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapSource").finish_non_exhaustive()
    }
}

#[async_trait]
impl<K, V, C, F> VersionSource for MapSource<K, V, C, F>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Clock + Clone,
    F: Fn(&http::request::Parts) -> Option<K> + Send + Sync + 'static,
{
    async fn current(&self, parts: &http::request::Parts) -> Result<Option<Current>, BoxError> {
        Ok((self.key)(parts).and_then(|k| self.map.current(&k)))
    }

    fn current_now(
        &self,
        parts: &http::request::Parts,
    ) -> Option<Result<Option<Current>, BoxError>> {
        Some(Ok((self.key)(parts).and_then(|k| self.map.current(&k))))
    }
}
