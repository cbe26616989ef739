//! The embedded SQLite backend (placeholder; being built).
use crate::{Error, Result, StoreOptions};
use std::path::Path;

pub struct SqliteStore;

impl SqliteStore {
    pub async fn open(path: &Path, _options: StoreOptions) -> Result<Self> {
        Err(Error::Unavailable(format!(
            "sqlite backend at {} not built yet",
            path.display()
        )))
    }
}
