//! The conformance suite on PostgreSQL: every check on a schema of its own in one throwaway
//! server, reopened in the same schema where the check reopens its directory.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use evhost_store::conformance::{Backend, StoreConfig};
use evhost_store::{StorageError, Store};

use super::*;
use crate::test_server::TestServer;

/// The backend under test: the schema is named after the check's directory.
struct Postgres;

#[async_trait]
impl Backend for Postgres {
    async fn open(&self, dir: &Path, config: StoreConfig) -> Result<Arc<dyn Store>, StorageError> {
        let server = tokio::task::spawn_blocking(TestServer::shared)
            .await
            .expect("the test server");
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a directory name");
        let schema = format!(
            "c_{}",
            name.rsplit('-').next().expect("a suffix").to_lowercase()
        );
        let mut options = PgOptions::new(server.url("postgres"));
        options.schema = schema[..schema.len().min(48)].to_owned();
        options.append_limits = config.append_limits;
        options.page_bytes = config.page_bytes;
        options.pool_size = 4;
        Ok(Arc::new(PgStore::open(options).await?))
    }

    fn persistent(&self) -> bool {
        true
    }
}

evhost_store::conformance_tests!(Postgres);

#[test]
fn prefixes_end_where_their_keys_do() {
    assert_eq!(text_after_prefix("ab"), Some("ac".to_owned()));
    assert_eq!(text_after_prefix(""), None);
    assert_eq!(text_after_prefix("a\u{10FFFF}"), Some("b".to_owned()));
    assert_eq!(text_after_prefix("\u{D7FF}"), Some("\u{E000}".to_owned()));
    assert_eq!(bytes_after_prefix(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(bytes_after_prefix(b"\xff\xff"), None);
    for (prefix, key) in [
        ("ab", "ab\u{10FFFF}zz"),
        ("a\u{10FFFF}", "a\u{10FFFF}\u{10FFFF}"),
    ] {
        let end = text_after_prefix(prefix).unwrap();
        assert!(key.starts_with(prefix) && key < end.as_str());
    }
}
