//! The compare-and-set on PostgreSQL (feature `postgres`): an `UPDATE` guarded by
//! `WHERE version = $expected` that bumps the version, in one statement.

use crate::{Conflict, Expected, Version};
use sqlx::{Encode, PgExecutor, Postgres, QueryBuilder, Row, Type};

/// A table whose rows carry a version column (`BIGINT`, bumped by every write).
///
/// ```no_run
/// use optimistic_lock::{Expected, PgVersioned, Version};
///
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let orders = PgVersioned::new("orders", "id", "version")?;
/// let expected = Expected::Version(Version::number(4)); // from the request's If-Match
/// let new_version = orders
///     .update(&pool, "ord_1", &expected, |set| {
///         set.push("quantity = ").push_bind(3_i32);
///     })
///     .await?; // CasError::Conflict when another write got there first
/// assert_eq!(new_version, Version::number(5));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgVersioned {
    table: String,
    id_column: String,
    version_column: String,
}

/// A table or column name that is not a plain SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*, optionally schema-qualified)"
)]
pub struct InvalidIdentifier(pub String);

/// Why a compare-and-set write did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CasError {
    /// The row is not at the expected version (or exists where `Expected::Absent` said it must
    /// not): answer with [`Conflict::into_response`], a `412`.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// There is no row with that id.
    #[error("no row with that id")]
    NotFound,
    /// The version column holds a negative number.
    #[error("the version column holds {0}, not a version")]
    BadVersion(i64),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn plain(ident: &str) -> bool {
    !ident.is_empty()
        && ident.split('.').count() <= 2
        && ident.split('.').all(|part| {
            let mut bytes = part.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

fn version(v: i64) -> Result<Version, CasError> {
    u64::try_from(v)
        .map(Version::number)
        .map_err(|_| CasError::BadVersion(v))
}

impl PgVersioned {
    /// A versioned table. The names are checked to be plain identifiers, since they are written
    /// into the SQL text.
    ///
    /// # Errors
    /// [`InvalidIdentifier`] for anything but `name` or `schema.name`.
    pub fn new(
        table: &str,
        id_column: &str,
        version_column: &str,
    ) -> Result<Self, InvalidIdentifier> {
        for ident in [table, id_column, version_column] {
            if !plain(ident) {
                return Err(InvalidIdentifier(ident.to_owned()));
            }
        }
        Ok(Self {
            table: table.to_owned(),
            id_column: id_column.to_owned(),
            version_column: version_column.to_owned(),
        })
    }

    /// The row's current version (`None`: no such row).
    ///
    /// # Errors
    /// [`CasError::Database`], or [`CasError::BadVersion`] for a negative version.
    pub async fn current<'e, E, I>(&self, executor: E, id: I) -> Result<Option<Version>, CasError>
    where
        E: PgExecutor<'e>,
        I: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send,
    {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM {} WHERE {} = ",
            self.version_column, self.table, self.id_column
        ));
        q.push_bind(id);
        let row = q.build().fetch_optional(executor).await?;
        row.map(|r| version(r.try_get::<i64, _>(0)?)).transpose()
    }

    /// Writes the row `id` if it is as `expected` says, in one statement:
    /// `UPDATE <table> SET <set>, version = version + 1 WHERE id = $id AND version = $expected`.
    /// `set` pushes the assignments (`col = ` and a bind, comma-separated). Returns the new
    /// version.
    ///
    /// `Expected::Unconditional` updates whatever the version; `Expected::Absent` (create-only)
    /// never updates: a create is an `INSERT … ON CONFLICT DO NOTHING` of the application's own.
    ///
    /// # Errors
    /// [`CasError::Conflict`] with the version found when the row is elsewhere,
    /// [`CasError::NotFound`] when there is no row, [`CasError::Database`].
    pub async fn update<'e, E, I, F>(
        &self,
        executor: E,
        id: I,
        expected: &Expected,
        set: F,
    ) -> Result<Version, CasError>
    where
        E: PgExecutor<'e>,
        I: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send + Clone,
        F: FnOnce(&mut QueryBuilder<Postgres>),
    {
        let guard = match expected {
            Expected::Version(v) => match v.as_number().map(i64::try_from) {
                Some(Ok(n)) => Some(n),
                // Not a row version number: no row can be at it.
                _ => Some(-1),
            },
            Expected::Unconditional => None,
            Expected::Absent => Some(-1),
        };
        let (t, idc, vc) = (&self.table, &self.id_column, &self.version_column);
        // `found` reads the row as of the statement's snapshot; `updated` writes it only if it is
        // (still) at the expected version — PostgreSQL re-checks the WHERE clause on the newest
        // row version when another transaction changed it concurrently.
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "WITH found AS (SELECT {vc} FROM {t} WHERE {idc} = "
        ));
        q.push_bind(id.clone());
        q.push(format!("), updated AS (UPDATE {t} SET "));
        set(&mut q);
        q.push(format!(", {vc} = {vc} + 1 WHERE {idc} = "));
        q.push_bind(id);
        if let Some(n) = guard {
            q.push(format!(" AND {vc} = "));
            q.push_bind(n);
        }
        q.push(format!(
            " RETURNING {vc}) SELECT (SELECT {vc} FROM updated), (SELECT {vc} FROM found)"
        ));
        let row = q.build().fetch_one(executor).await?;
        let updated: Option<i64> = row.try_get(0)?;
        let found: Option<i64> = row.try_get(1)?;
        match (updated, found) {
            (Some(v), _) => version(v),
            (None, Some(v)) => Err(Conflict::new(Some(version(v)?)).into()),
            (None, None) => Err(CasError::NotFound),
        }
    }
}
