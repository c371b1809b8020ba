//! A non-durable store for unit tests and benchmarks.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::{NewToken, Spent, StoreError, TokenStore, TokenUpdate, UseLimits};
use crate::token::{TokenId, TokenRecord, UnixMillis};

/// Keeps tokens in memory only; everything is lost with the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    rows: Mutex<(i64, BTreeMap<TokenId, TokenRecord>)>,
    revoked: Mutex<BTreeMap<String, Option<UnixMillis>>>,
}

impl MemoryStore {
    fn rows(&self) -> std::sync::MutexGuard<'_, (i64, BTreeMap<TokenId, TokenRecord>)> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.rows().1.values().cloned().collect())
    }

    fn fetch(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.rows().1.get(&id).cloned())
    }

    fn insert(&self, token: NewToken) -> Result<TokenId, StoreError> {
        let mut rows = self.rows();
        rows.0 += 1;
        let id = TokenId(rows.0);
        let record = TokenRecord {
            id,
            kind: token.kind,
            secret_hash: token.secret_hash,
            spec: token.spec,
            added_on: token.added_on,
            uses: 0,
            bound_ips: Vec::new(),
        };
        rows.1.insert(id, record);
        Ok(id)
    }

    fn update(&self, change: &TokenUpdate) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        let Some(r) = rows.1.get_mut(&change.id) else {
            return Ok(false);
        };
        if let Some(h) = change.secret_hash {
            r.secret_hash = h;
        }
        r.spec = change.spec.clone();
        change.bound_ips.apply(&mut r.bound_ips);
        Ok(true)
    }

    fn delete(&self, id: TokenId) -> Result<bool, StoreError> {
        Ok(self.rows().1.remove(&id).is_some())
    }

    fn load_revoked_jtis(&self) -> Result<Vec<(String, Option<UnixMillis>)>, StoreError> {
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        Ok(revoked.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    fn revoke_jti(&self, jti: &str, expires_on: Option<UnixMillis>) -> Result<(), StoreError> {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti.to_owned(), expires_on);
        Ok(())
    }

    fn spend(&self, id: TokenId, ip: IpAddr, limits: UseLimits) -> Result<Spent, StoreError> {
        let mut rows = self.rows();
        let Some(r) = rows.1.get_mut(&id) else {
            return Ok(Spent::Missing);
        };
        let spent = limits.spend(r.uses, &r.bound_ips, ip);
        if let Spent::Granted { uses, bound_ips } = &spent {
            r.uses = *uses;
            r.bound_ips.clone_from(bound_ips);
        }
        Ok(spent)
    }
}
