//! Layer indexes: each layer's entry list (no contents), kept so that building on a cached or
//! loaded layer never reads its tar again. Made once per layer blob: recorded by the writer of a
//! new layer, or read from the tar the first time a loaded layer is used.

use super::{Store, StoreError};
use crate::{
    digest::Digest,
    layer::view::{RawEntry, open_layer, read_entries},
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS layer_index (
    blob    TEXT PRIMARY KEY,
    entries BLOB NOT NULL
);
";

impl Store {
    /// Records the entries of layer blob `blob` (as its writer knows them).
    pub fn record_layer_entries(
        &self,
        blob: &Digest,
        entries: &[RawEntry],
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(entries).unwrap_or_default();
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO layer_index (blob, entries) VALUES (?1, ?2)",
                rusqlite::params![blob.to_string(), json],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The entries of layer blob `blob`: from its index, or read from the tar once and indexed.
    pub fn layer_entries(&self, blob: &Digest) -> Result<Vec<RawEntry>, StoreError> {
        let stored: Option<Vec<u8>> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT entries FROM layer_index WHERE blob = ?1")
                .map_err(self.db_err())?;
            let mut rows = stmt.query([blob.to_string()]).map_err(self.db_err())?;
            match rows.next().map_err(self.db_err())? {
                Some(r) => Some(r.get(0).map_err(self.db_err())?),
                None => None,
            }
        };
        if let Some(Ok(entries)) = stored.map(|j| serde_json::from_slice::<Vec<RawEntry>>(&j)) {
            return Ok(entries);
        }
        let path = self.blob_path(blob);
        let reader = open_layer(&path).map_err(super::io_err(&path))?;
        let entries = read_entries(reader).map_err(super::io_err(&path))?;
        self.record_layer_entries(blob, &entries)?;
        Ok(entries)
    }
}
