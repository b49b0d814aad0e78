//! What a failure of PostgreSQL means for the caller: whether nothing happened and the operation
//! may be tried again (a lost connection, a failover, a server shutting down, a conflict between
//! transactions), or the database refused it for good.

use evhost_store::StorageError;

/// Whether an error leaves the connection unusable or the server unable to take this work now,
/// so that the same work may succeed on a new connection (perhaps to a new primary).
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    let Some(code) = error.code() else {
        // No SQLSTATE: an I/O error, a timeout or a protocol failure on the connection.
        return true;
    };
    let code = code.code();
    // 08: connection exceptions; 40: transaction rollbacks (serialization, deadlock); 53: the
    // server is out of resources (too many connections); 57P01-57P03: the server is shutting down
    // or starting; 25006: a read-only transaction, as on a standby after a failover.
    code.starts_with("08")
        || code.starts_with("40")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
}

/// A failed database operation, as the contract's error.
pub fn database(error: tokio_postgres::Error) -> StorageError {
    if is_transient(&error) {
        StorageError::Unavailable(format!("PostgreSQL: {}", describe(&error)))
    } else {
        StorageError::Failed(format!("PostgreSQL: {}", describe(&error)))
    }
}

/// A failure to get a connection from the pool.
pub fn pool(error: deadpool_postgres::PoolError) -> StorageError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => database(error),
        other => StorageError::Unavailable(format!("PostgreSQL connection pool: {other}")),
    }
}

/// The error with the server's message and detail when it sent them.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}
