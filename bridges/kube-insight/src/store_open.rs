//! Opens the store a `KUBE_INSIGHT_STORE` URL names, with the backend its
//! scheme selects. The Cassandra backend is compiled in with the
//! `cassandra` feature (on by default); a build without it names the
//! feature when it meets a `cassandra://` URL.

use kube_insight_store::{DynStore, Result, StoreOptions, StoreUrl};

/// Opens the store for serving and for the CLI. A cassandra keyspace must
/// have been set up by `kube-insight schema apply` ([`open_for_schema_apply`]).
pub async fn open(url: &str, options: StoreOptions) -> Result<DynStore> {
    open_with(url, options, false).await
}

/// Opens the store for `kube-insight schema apply`: a cassandra keyspace and
/// its tables are created or migrated first, under the schema lock.
pub async fn open_for_schema_apply(url: &str, options: StoreOptions) -> Result<DynStore> {
    open_with(url, options, true).await
}

async fn open_with(url: &str, options: StoreOptions, apply: bool) -> Result<DynStore> {
    match StoreUrl::parse(url)? {
        StoreUrl::Sqlite { .. } => kube_insight_store_sqlite::open(url, options).await,
        StoreUrl::Cassandra { .. } => open_cassandra(url, options, apply).await,
    }
}

#[cfg(feature = "cassandra")]
async fn open_cassandra(url: &str, options: StoreOptions, apply: bool) -> Result<DynStore> {
    if apply {
        kube_insight_store_cassandra::open_for_schema_apply(url, options).await
    } else {
        kube_insight_store_cassandra::open(url, options).await
    }
}

#[cfg(not(feature = "cassandra"))]
async fn open_cassandra(url: &str, _options: StoreOptions, _apply: bool) -> Result<DynStore> {
    Err(kube_insight_store::Error::InvalidUrl {
        url: url.to_string(),
        reason: "this build has no cassandra backend: rebuild with `--features cassandra` \
                 or use a sqlite:// store"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_urls_open_the_embedded_backend() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/insight.db", dir.path().display());
        let store = open(&url, StoreOptions::default()).await.unwrap();
        assert_eq!(store.backend(), "sqlite");
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_named() {
        let e = match open("postgres://db/insight", StoreOptions::default()).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("postgres:// opened"),
        };
        assert!(e.contains("postgres://db/insight"), "{e}");
    }
}
