//! User networks (`kiln network create`): name, id, subnet, gateway, whether internal, labels.
//! The plumbing is made when a container attaches ([`crate::network`]); the store keeps only
//! the definition.

use std::collections::BTreeMap;

use super::{Store, StoreError, db::now};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (
    name     TEXT PRIMARY KEY,
    id       TEXT NOT NULL UNIQUE,
    subnet   TEXT NOT NULL,
    gateway  TEXT NOT NULL,
    internal INTEGER NOT NULL,
    labels   TEXT NOT NULL,
    created  INTEGER NOT NULL
);
";

/// One user network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// `10.91.3.0/24`.
    pub subnet: String,
    pub gateway: String,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub created: i64,
}

impl Store {
    /// Records a new network; a name or subnet in use is a conflict.
    pub fn add_network(&self, n: &Network) -> Result<(), StoreError> {
        if self.networks()?.iter().any(|o| o.subnet == n.subnet) {
            return Err(StoreError::Conflict(format!(
                "subnet {} is in use by another network",
                n.subnet
            )));
        }
        let labels = serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".into());
        let done = self.conn().execute(
            "INSERT INTO networks (name, id, subnet, gateway, internal, labels, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![n.name, n.id, n.subnet, n.gateway, n.internal, labels, now()],
        );
        match done {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!(
                    "network with name {} already exists",
                    n.name
                )))
            }
            Err(e) => Err(self.db_err()(e)),
        }
    }

    /// Every user network, by name.
    pub fn networks(&self) -> Result<Vec<Network>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, id, subnet, gateway, internal, labels, created FROM networks \
                 ORDER BY name",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Network {
                    name: r.get(0)?,
                    id: r.get(1)?,
                    subnet: r.get(2)?,
                    gateway: r.get(3)?,
                    internal: r.get(4)?,
                    labels: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                    created: r.get(6)?,
                })
            })
            .map_err(self.db_err())?;
        rows.collect::<Result<_, _>>().map_err(self.db_err())
    }

    /// The network named `what`, or whose id starts with it.
    pub fn find_network(&self, what: &str) -> Result<Option<Network>, StoreError> {
        let all = self.networks()?;
        if let Some(n) = all.iter().find(|n| n.name == what || n.id == what) {
            return Ok(Some(n.clone()));
        }
        let by_prefix: Vec<&Network> = all
            .iter()
            .filter(|n| what.len() >= 3 && n.id.starts_with(what))
            .collect();
        Ok(match by_prefix.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        })
    }

    /// Forgets network `name`.
    pub fn remove_network(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM networks WHERE name = ?1", [name])
            .map_err(self.db_err())?;
        Ok(n > 0)
    }
}
