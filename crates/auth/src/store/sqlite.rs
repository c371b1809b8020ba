//! The embedded default store: one SQLite file in WAL mode, written by one thread that commits
//! concurrent writes together (group commit), so that every write is durable (`synchronous =
//! FULL`) without paying one disk flush per write.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use rusqlite::{params, Connection, OptionalExtension};

use super::{NewToken, Spent, StoreError, TokenStore, TokenUpdate, UseLimits};
use crate::token::{TokenId, TokenKind, TokenRecord, TokenSpec};
use crate::SecretHash;

/// Most writes committed in one transaction.
pub const MAX_WRITES_PER_COMMIT: usize = 512;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: tokens, one row each, the policy as JSON.
    "CREATE TABLE tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('publish', 'subscribe')),
        secret_hash BLOB NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
        spec TEXT NOT NULL,
        added_on INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0,
        bound_ips TEXT NOT NULL DEFAULT '[]'
    );",
    // 2: revoked signed-token ids.
    "CREATE TABLE revoked_jti (
        jti TEXT PRIMARY KEY,
        expires_on INTEGER
    );",
];

enum Op {
    Insert(Box<NewToken>),
    Update(Box<TokenUpdate>),
    Delete(TokenId),
    Spend(TokenId, IpAddr, UseLimits),
    RevokeJti(String, Option<i64>),
}

enum Done {
    Id(TokenId),
    Changed(bool),
    Spent(Spent),
}

type Job = super::Job<Op, Done>;

/// A token store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it, and starts its writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut conn = Connection::open(path).map_err(|e| open_err(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| open_err(&e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| open_err(&e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| open_err(&e))?;
        migrate(&mut conn).map_err(|e| open_err(&e))?;
        let (jobs, rx) = mpsc::channel();
        thread::Builder::new()
            .name("token-store".into())
            .spawn(move || writer(conn, rx))
            .map_err(|e| open_err(&e))?;
        Ok(Self {
            path: path.to_owned(),
            jobs,
        })
    }

    fn run(&self, op: Op) -> Result<Done, StoreError> {
        super::run_job(&self.jobs, op)
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// The writer loop: takes every job waiting, runs each in a savepoint of one transaction,
/// commits once, then answers each job.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        let committed = (|| -> rusqlite::Result<()> {
            let mut tx = conn.transaction()?;
            for job in &batch {
                let sp_result = (|| {
                    let sp = tx.savepoint()?;
                    let r = apply(&sp, &job.op)?;
                    sp.commit()?;
                    Ok(r)
                })();
                results.push(sp_result.map_err(StoreError::Database));
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "token store commit failed");
                for job in batch {
                    let _ = job.reply.send(Err(StoreError::Commit(e.to_string())));
                }
            }
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn apply(conn: &Connection, op: &Op) -> rusqlite::Result<Done> {
    match op {
        Op::Insert(t) => {
            conn.execute(
                "INSERT INTO tokens (kind, secret_hash, spec, added_on) VALUES (?1, ?2, ?3, ?4)",
                params![
                    t.kind.as_str(),
                    &t.secret_hash.0[..],
                    json(&t.spec)?,
                    t.added_on
                ],
            )?;
            Ok(Done::Id(TokenId(conn.last_insert_rowid())))
        }
        Op::Update(u) => {
            // Runs inside the writer's transaction: the bound IPs are read and written back
            // in the same one, and the use count is not touched.
            let bound: Option<String> = conn
                .query_row(
                    "SELECT bound_ips FROM tokens WHERE id = ?1",
                    params![u.id.0],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(bound) = bound else {
                return Ok(Done::Changed(false));
            };
            let mut ips: Vec<IpAddr> = serde_json::from_str(&bound).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            u.bound_ips.apply(&mut ips);
            let n = match &u.secret_hash {
                Some(h) => conn.execute(
                    "UPDATE tokens SET secret_hash = ?2, spec = ?3, bound_ips = ?4 WHERE id = ?1",
                    params![u.id.0, &h.0[..], json(&u.spec)?, json(&ips)?],
                )?,
                None => conn.execute(
                    "UPDATE tokens SET spec = ?2, bound_ips = ?3 WHERE id = ?1",
                    params![u.id.0, json(&u.spec)?, json(&ips)?],
                )?,
            };
            Ok(Done::Changed(n > 0))
        }
        Op::Delete(id) => {
            let n = conn.execute("DELETE FROM tokens WHERE id = ?1", params![id.0])?;
            Ok(Done::Changed(n > 0))
        }
        Op::RevokeJti(jti, expires_on) => {
            let n = conn.execute(
                "INSERT OR REPLACE INTO revoked_jti (jti, expires_on) VALUES (?1, ?2)",
                params![jti, expires_on],
            )?;
            Ok(Done::Changed(n > 0))
        }
        Op::Spend(id, ip, limits) => {
            // The writer's transaction holds the count between the read and the write.
            let row: Option<(u32, String)> = conn
                .query_row(
                    "SELECT uses, bound_ips FROM tokens WHERE id = ?1",
                    params![id.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((uses, bound)) = row else {
                return Ok(Done::Spent(Spent::Missing));
            };
            let ips: Vec<IpAddr> = serde_json::from_str(&bound).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            let spent = limits.spend(uses, &ips, *ip);
            if let Spent::Granted { uses, bound_ips } = &spent {
                conn.execute(
                    "UPDATE tokens SET uses = ?2, bound_ips = ?3 WHERE id = ?1",
                    params![id.0, uses, json(bound_ips)?],
                )?;
            }
            Ok(Done::Spent(spent))
        }
    }
}

/// A token's columns, in the order [`decode_row`] reads them.
const SELECT_TOKEN: &str =
    "SELECT id, kind, secret_hash, spec, added_on, uses, bound_ips FROM tokens";

fn decode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<TokenRecord, StoreError>> {
    let id: i64 = row.get(0)?;
    let kind: String = row.get(1)?;
    let hash: Vec<u8> = row.get(2)?;
    let spec: String = row.get(3)?;
    let added_on: i64 = row.get(4)?;
    let uses: u32 = row.get(5)?;
    let bound: String = row.get(6)?;
    let corrupt = |reason: String| StoreError::Corrupt { id, reason };
    Ok((|| {
        let kind = match kind.as_str() {
            "publish" => TokenKind::Publish,
            "subscribe" => TokenKind::Subscribe,
            other => return Err(corrupt(format!("kind {other:?}"))),
        };
        let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt("hash length".into()))?;
        let spec: TokenSpec = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
        let bound_ips: Vec<IpAddr> =
            serde_json::from_str(&bound).map_err(|e| corrupt(e.to_string()))?;
        Ok(TokenRecord {
            id: TokenId(id),
            kind,
            secret_hash: SecretHash(hash),
            spec,
            added_on,
            uses,
            bound_ips,
        })
    })())
}

impl TokenStore for SqliteStore {
    fn load(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = Connection::open(&self.path)?;
        let mut stmt = conn.prepare(&format!("{SELECT_TOKEN} ORDER BY id"))?;
        let rows = stmt.query_map([], decode_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    fn fetch(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let conn = Connection::open(&self.path)?;
        let row = conn
            .query_row(
                &format!("{SELECT_TOKEN} WHERE id = ?1"),
                params![id.0],
                decode_row,
            )
            .optional()?;
        row.transpose()
    }

    fn insert(&self, token: NewToken) -> Result<TokenId, StoreError> {
        match self.run(Op::Insert(Box::new(token)))? {
            Done::Id(id) => Ok(id),
            Done::Changed(_) | Done::Spent(_) => Err(StoreError::Closed),
        }
    }

    fn update(&self, change: &TokenUpdate) -> Result<bool, StoreError> {
        changed(self.run(Op::Update(Box::new(change.clone())))?)
    }

    fn delete(&self, id: TokenId) -> Result<bool, StoreError> {
        changed(self.run(Op::Delete(id))?)
    }

    fn load_revoked_jtis(&self) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let conn = Connection::open(&self.path)?;
        let mut stmt = conn.prepare("SELECT jti, expires_on FROM revoked_jti ORDER BY jti")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn revoke_jti(&self, jti: &str, expires_on: Option<i64>) -> Result<(), StoreError> {
        changed(self.run(Op::RevokeJti(jti.to_owned(), expires_on))?).map(|_| ())
    }

    fn spend(&self, id: TokenId, ip: IpAddr, limits: UseLimits) -> Result<Spent, StoreError> {
        match self.run(Op::Spend(id, ip, limits))? {
            Done::Spent(spent) => Ok(spent),
            Done::Id(_) | Done::Changed(_) => Err(StoreError::Closed),
        }
    }
}

fn changed(done: Done) -> Result<bool, StoreError> {
    match done {
        Done::Changed(c) => Ok(c),
        Done::Id(_) | Done::Spent(_) => Err(StoreError::Closed),
    }
}
