//! The shared store: PostgreSQL, which several nodes may use at once (`[store] url`).
//!
//! One thread per node owns the connection and runs every operation in turn, each its own
//! transaction, durable when it returns (PostgreSQL's `synchronous_commit`). A lost connection
//! is opened again at the next operation; meanwhile operations fail with
//! [`StoreError::Unavailable`], and the node goes on deciding from memory. A use of a limited
//! token is one conditional `UPDATE` ([`TokenStore::spend`]): two nodes spending the last use
//! at once are ordered by the row's lock, and the second finds it spent.
//!
//! Every change is announced in its own transaction (`NOTIFY streamgate_tokens`, sent at
//! commit), naming the node that made it. A second connection per node listens, and hands the
//! other nodes' changes to [`TokenStore::changes`]; when it was lost, it asks for everything to
//! be read again once it listens anew, since changes made meanwhile were not heard.
//!
//! The schema is versioned: `streamgate_schema` records how many of [`MIGRATIONS`] ran, and a
//! node applies the rest at start under an advisory lock, so that nodes starting together
//! migrate once.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, Config, NoTls, Row, Transaction};

use super::{
    HeldLease, LeaseStore, NewToken, OtherLease, Pending, Renewed, Spent, StoreChange, StoreError,
    TokenStore, TokenUpdate, UseLimits, LEASE_TTL, MAX_OTHER_LEASES,
};
use crate::token::{TokenId, TokenKind, TokenRecord, TokenSpec, UnixMillis};
use crate::{SecretHash, StreamName};

/// Schema migrations, applied in order.
const MIGRATIONS: &[&str] = &[
    // 1: tokens, one row each, the policy as JSON.
    "CREATE TABLE tokens (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('publish', 'subscribe')),
        secret_hash BYTEA NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
        spec TEXT NOT NULL,
        added_on BIGINT NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
        bound_ips TEXT[] NOT NULL DEFAULT '{}'
    );",
    // 2: revoked signed-token ids.
    "CREATE TABLE revoked_jti (
        jti TEXT PRIMARY KEY,
        expires_on BIGINT
    );",
    // 3: publish leases, one per live stream name, held by a node (the process's random id)
    // until it expires by the database's clock.
    "CREATE TABLE publish_leases (
        stream TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        session BIGINT NOT NULL,
        subscribe_requires_auth BOOLEAN NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );",
    // 4: the holder's configured name, and where other nodes pull its streams from.
    "ALTER TABLE publish_leases
        ADD COLUMN node_name TEXT NOT NULL DEFAULT '',
        ADD COLUMN origin TEXT NOT NULL DEFAULT '';",
];

/// The advisory lock taken while migrating ("sgschema").
const MIGRATION_LOCK: i64 = 0x7367_7363_6865_6d61;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the database may leave what was sent unacknowledged, or a statement run, before
/// the operation fails: a database that stops answering holds up the node's writes for this
/// long at most, not for ever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The channel changes are announced on.
const CHANNEL: &str = "streamgate_tokens";
/// How often the listening connection looks at its state while no change comes, and waits
/// between attempts to listen again.
const LISTEN_TICK: Duration = Duration::from_millis(500);
/// Changes heard and not yet taken; past this, they are dropped and everything is read again.
const CHANGES_QUEUED: usize = 4096;

/// A use spent in one statement: the count and the bound addresses change only if the
/// limits allow it. `$2`: 1 if uses are counted; `$3`: the number of addresses that bind;
/// `$4`: the address; `$5`: `maxUses`.
const SPEND: &str = "UPDATE tokens SET
        uses = uses + $2,
        bound_ips = CASE
            WHEN $3::INTEGER IS NULL OR $4 = ANY(bound_ips) THEN bound_ips
            ELSE array_append(bound_ips, $4)
        END
    WHERE id = $1
        AND ($5::INTEGER IS NULL OR uses < $5)
        AND ($3::INTEGER IS NULL OR $4 = ANY(bound_ips) OR cardinality(bound_ips) < $3)
    RETURNING uses, bound_ips";

/// Takes leases, one per row of the arrays `$3` (stream), `$4` (session) and `$5` (whether it
/// needs subscribe tokens), for holder `$1` (named `$6`, its streams pulled from `$7`) and `$2`
/// seconds: a lease of the same holder is renewed, an expired one of another taken over, a
/// live one of another left. Returns the streams taken.
const TAKE_LEASES: &str = "INSERT INTO publish_leases AS l
        (stream, holder, session, subscribe_requires_auth, expires_at, node_name, origin)
    SELECT h.stream, $1, h.session, h.protect, now() + make_interval(secs => $2), $6, $7
        FROM unnest($3::TEXT[], $4::BIGINT[], $5::BOOLEAN[]) AS h(stream, session, protect)
    ON CONFLICT (stream) DO UPDATE SET
        holder = EXCLUDED.holder,
        session = EXCLUDED.session,
        subscribe_requires_auth = EXCLUDED.subscribe_requires_auth,
        expires_at = EXCLUDED.expires_at,
        node_name = EXCLUDED.node_name,
        origin = EXCLUDED.origin
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
    RETURNING stream";

enum Op {
    Load,
    Fetch(TokenId),
    LoadRevoked,
    Insert(Box<NewToken>),
    Update(Box<TokenUpdate>),
    Delete(TokenId),
    Spend(TokenId, IpAddr, UseLimits),
    RevokeJti(String, Option<UnixMillis>),
    Claim(HeldLease),
    Renew(Vec<HeldLease>),
    Release(StreamName, u64),
    ReleaseAll,
}

enum Done {
    Records(Vec<TokenRecord>),
    Record(Option<Box<TokenRecord>>),
    Revoked(Vec<(String, Option<UnixMillis>)>),
    Id(TokenId),
    Changed(bool),
    Spent(Spent),
    Claimed(bool),
    Renewed(Renewed),
}

type Job = super::Job<Op, Done>;

/// A token store in a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    jobs: mpsc::Sender<Job>,
    changes: Mutex<Option<mpsc::Receiver<StoreChange>>>,
}

/// Who a node is to the other nodes sharing the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Its configured name (`[cluster] node_id`), shown beside its leases.
    pub name: String,
    /// Where the other nodes pull its streams from (`[cluster] advertise`); empty: nowhere.
    pub origin: String,
}

/// This node, as its operations name it.
#[derive(Debug, Clone)]
struct Me {
    /// This process's random id: the holder of its leases and the author of its announcements.
    holder: String,
    name: String,
    origin: String,
}

/// The publish leases in the database, run by the store's thread in turn with its other
/// operations.
#[derive(Debug)]
struct PostgresLeases {
    jobs: mpsc::Sender<Job>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or the
    /// key-value form), migrates it, and starts the thread that runs the operations. Fails if
    /// the database cannot be reached now. `identity` says who this node is to the others.
    pub fn open(url: &str, identity: NodeIdentity) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: redacted(url),
            reason,
        };
        let mut config = Config::from_str(url).map_err(|e| open_err(e.to_string()))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(ANSWER_TIMEOUT)
            .keepalives_idle(ANSWER_TIMEOUT);
        let holder = node_id().map_err(|e| open_err(e.to_string()))?;
        let node = holder.clone();
        let me = Me {
            holder,
            name: identity.name,
            origin: identity.origin,
        };
        // The client runs a runtime of its own, which cannot start inside the server's: the
        // connections live on the store's threads from the start.
        let (opened, open_result) = mpsc::sync_channel(1);
        let (jobs, rx) = mpsc::channel();
        let runner_config = config.clone();
        let runner_me = me;
        thread::Builder::new()
            .name("token-store".into())
            .spawn(move || {
                let first = connect(&runner_config).and_then(|mut client| {
                    migrate(&mut client)?;
                    Ok(client)
                });
                match first {
                    Ok(client) => {
                        let _ = opened.send(Ok(()));
                        runner(runner_config, runner_me, Some(client), rx);
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e.to_string()));
                    }
                }
            })
            .map_err(|e| open_err(e.to_string()))?;
        match open_result.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(open_err(reason)),
            Err(_) => return Err(open_err("the store's thread ended".into())),
        }
        // Listening before the node reads the tokens: no change made after the read is missed.
        let (listening, listen_result) = mpsc::sync_channel(1);
        let (changes_tx, changes) = mpsc::sync_channel(CHANGES_QUEUED);
        thread::Builder::new()
            .name("token-changes".into())
            .spawn(move || listen(&config, &node, &listening, &changes_tx))
            .map_err(|e| open_err(e.to_string()))?;
        match listen_result.recv() {
            Ok(Ok(())) => Ok(Self {
                jobs,
                changes: Mutex::new(Some(changes)),
            }),
            Ok(Err(reason)) => Err(open_err(reason)),
            Err(_) => Err(open_err("the listening thread ended".into())),
        }
    }

    fn run(&self, op: Op) -> Result<Done, StoreError> {
        super::run_job(&self.jobs, op)
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_info = &url[scheme + 3..at];
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ if url.contains("password") => "(a connection string with a password)".to_owned(),
        _ => url.to_owned(),
    }
}

/// This process's name in the announcements: random, so that a node restarted on the same
/// host is another.
fn node_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Announces a change of token `id` by `node`, at the commit of `tx`.
fn announce_token(
    tx: &mut Transaction<'_>,
    node: &str,
    id: TokenId,
) -> Result<(), ::postgres::Error> {
    let payload = format!("{node} t {}", id.0);
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
    Ok(())
}

/// What an announcement says, unless `node` made it (or it is not one of ours).
fn heard(node: &str, payload: &str) -> Option<StoreChange> {
    let mut parts = payload.splitn(4, ' ');
    let from = parts.next()?;
    if from == node {
        return None;
    }
    match parts.next()? {
        "t" => Some(StoreChange::Token(TokenId(parts.next()?.parse().ok()?))),
        "j" => {
            let expires = parts.next()?;
            let expires = (expires != "-").then(|| expires.parse().ok()).flatten();
            Some(StoreChange::Jti(parts.next()?.to_owned(), expires))
        }
        _ => None,
    }
}

/// The listening thread: hears the other nodes' changes and queues them; when its connection
/// was lost, it listens again and asks for everything to be read again. Reports on
/// `listening` once it first listens (or why it cannot); ends when nobody takes the changes.
fn listen(
    config: &Config,
    node: &str,
    listening: &mpsc::SyncSender<Result<(), String>>,
    changes: &mpsc::SyncSender<StoreChange>,
) {
    let mut first = true;
    // Changes were dropped (the queue was full) or not heard: a reload is owed.
    let mut owed = false;
    loop {
        let client = connect(config).and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            Ok(c)
        });
        let mut client = match client {
            Ok(c) => c,
            Err(e) => {
                if first {
                    let _ = listening.send(Err(e.to_string()));
                    return;
                }
                thread::sleep(LISTEN_TICK);
                continue;
            }
        };
        if first {
            first = false;
            let _ = listening.send(Ok(()));
        } else {
            tracing::info!("listening to the token database's changes again");
            owed = true;
        }
        loop {
            if owed {
                match changes.try_send(StoreChange::Reload) {
                    Ok(()) => owed = false,
                    Err(mpsc::TrySendError::Full(_)) => {}
                    Err(mpsc::TrySendError::Disconnected(_)) => return,
                }
            }
            let mut notifications = client.notifications();
            let mut heard_now = notifications.timeout_iter(LISTEN_TICK);
            match heard_now.next() {
                Ok(Some(n)) => {
                    let Some(change) = heard(node, n.payload()) else {
                        continue;
                    };
                    match changes.try_send(change) {
                        Ok(()) => {}
                        Err(mpsc::TrySendError::Full(_)) => owed = true,
                        Err(mpsc::TrySendError::Disconnected(_)) => return,
                    }
                }
                Ok(None) => {
                    drop(heard_now);
                    drop(notifications);
                    if client.is_closed() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the token database's change announcements");
                    break;
                }
            }
        }
        thread::sleep(LISTEN_TICK);
    }
}

/// A new connection, its statements bounded in time.
fn connect(config: &Config) -> Result<Client, ::postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!(
        "SET statement_timeout = {}",
        ANSWER_TIMEOUT.as_millis()
    ))?;
    Ok(client)
}

fn migrate(client: &mut Client) -> Result<(), ::postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS streamgate_schema (version INTEGER NOT NULL)")?;
    let version: i32 = match tx.query_opt("SELECT version FROM streamgate_schema", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO streamgate_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(usize::MAX))
    {
        tx.batch_execute(sql)?;
        let done = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE streamgate_schema SET version = $1", &[&done])?;
    }
    tx.commit()
}

/// The operations' thread: runs each job on the connection, opening it again first if it was
/// lost.
fn runner(config: Config, me: Me, mut client: Option<Client>, rx: mpsc::Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        if client.as_ref().is_some_and(Client::is_closed) {
            client = None;
        }
        if client.is_none() {
            match connect(&config) {
                Ok(c) => {
                    tracing::info!("token database reachable again");
                    client = Some(c);
                }
                Err(e) => {
                    let _ = job.reply.send(Err(StoreError::Unavailable(e.to_string())));
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else {
            continue;
        };
        let result = apply(c, &me, &job.op).unwrap_or_else(|e| {
            Err(if e.is_closed() || c.is_closed() {
                tracing::warn!(error = %e, "token database connection lost");
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Postgres(e)
            })
        });
        let _ = job.reply.send(result);
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Commit(e.to_string()))
}

fn ip_texts(ips: &[IpAddr]) -> Vec<String> {
    ips.iter().map(ToString::to_string).collect()
}

fn count(n: Option<u32>) -> Option<i32> {
    n.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

const SELECT_TOKEN: &str =
    "SELECT id, kind, secret_hash, spec, added_on, uses, bound_ips FROM tokens";

fn apply(
    client: &mut Client,
    me: &Me,
    op: &Op,
) -> Result<Result<Done, StoreError>, ::postgres::Error> {
    let node = me.holder.as_str();
    Ok(match op {
        Op::Load => {
            let rows = client.query(&format!("{SELECT_TOKEN} ORDER BY id"), &[])?;
            rows.iter()
                .map(decode_row)
                .collect::<Result<Vec<_>, _>>()
                .map(Done::Records)
        }
        Op::Fetch(id) => {
            let row = client.query_opt(&format!("{SELECT_TOKEN} WHERE id = $1"), &[&id.0])?;
            row.as_ref()
                .map(|r| decode_row(r).map(Box::new))
                .transpose()
                .map(Done::Record)
        }
        Op::LoadRevoked => {
            let rows = client.query("SELECT jti, expires_on FROM revoked_jti ORDER BY jti", &[])?;
            Ok(Done::Revoked(
                rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            ))
        }
        Op::Insert(t) => {
            let spec = match json(&t.spec) {
                Ok(spec) => spec,
                Err(e) => return Ok(Err(e)),
            };
            let mut tx = client.transaction()?;
            let row = tx.query_one(
                "INSERT INTO tokens (kind, secret_hash, spec, added_on) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&t.kind.as_str(), &&t.secret_hash.0[..], &spec, &t.added_on],
            )?;
            let id = TokenId(row.get(0));
            announce_token(&mut tx, node, id)?;
            tx.commit()?;
            Ok(Done::Id(id))
        }
        Op::Update(u) => {
            let spec = match json(&u.spec) {
                Ok(spec) => spec,
                Err(e) => return Ok(Err(e)),
            };
            let mut tx = client.transaction()?;
            let Some(row) = tx.query_opt(
                "SELECT bound_ips FROM tokens WHERE id = $1 FOR UPDATE",
                &[&u.id.0],
            )?
            else {
                return Ok(Ok(Done::Changed(false)));
            };
            let mut ips = match parse_ips(u.id.0, row.get(0)) {
                Ok(ips) => ips,
                Err(e) => return Ok(Err(e)),
            };
            u.bound_ips.apply(&mut ips);
            let ips = ip_texts(&ips);
            match &u.secret_hash {
                Some(h) => tx.execute(
                    "UPDATE tokens SET secret_hash = $2, spec = $3, bound_ips = $4 WHERE id = $1",
                    &[&u.id.0, &&h.0[..], &spec, &ips],
                )?,
                None => tx.execute(
                    "UPDATE tokens SET spec = $2, bound_ips = $3 WHERE id = $1",
                    &[&u.id.0, &spec, &ips],
                )?,
            };
            announce_token(&mut tx, node, u.id)?;
            tx.commit()?;
            Ok(Done::Changed(true))
        }
        Op::Delete(id) => {
            let mut tx = client.transaction()?;
            let n = tx.execute("DELETE FROM tokens WHERE id = $1", &[&id.0])?;
            if n > 0 {
                announce_token(&mut tx, node, *id)?;
            }
            tx.commit()?;
            Ok(Done::Changed(n > 0))
        }
        Op::RevokeJti(jti, expires_on) => {
            let mut tx = client.transaction()?;
            let n = tx.execute(
                "INSERT INTO revoked_jti (jti, expires_on) VALUES ($1, $2)
                 ON CONFLICT (jti) DO UPDATE SET expires_on = EXCLUDED.expires_on",
                &[jti, expires_on],
            )?;
            let expires = expires_on.map_or_else(|| "-".to_owned(), |e| e.to_string());
            let payload = format!("{node} j {expires} {jti}");
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
            tx.commit()?;
            Ok(Done::Changed(n > 0))
        }
        Op::Claim(lease) => {
            let taken = take_leases(client, me, std::slice::from_ref(lease))?;
            Ok(Done::Claimed(!taken.is_empty()))
        }
        Op::Renew(held) => {
            let mut tx = client.transaction()?;
            tx.execute("DELETE FROM publish_leases WHERE expires_at <= now()", &[])?;
            let taken = take_leases(&mut tx, me, held)?;
            let limit = i64::try_from(MAX_OTHER_LEASES).unwrap_or(i64::MAX);
            let rows = tx.query(
                "SELECT stream, subscribe_requires_auth, origin FROM publish_leases
                    WHERE holder <> $1 AND expires_at > now() LIMIT $2",
                &[&node, &limit],
            )?;
            tx.commit()?;
            let others = rows
                .iter()
                .filter_map(|r| {
                    let stream: String = r.get(0);
                    Some(OtherLease {
                        stream: StreamName::new(&stream).ok()?,
                        origin: r.get(2),
                        subscribe_requires_auth: r.get(1),
                    })
                })
                .collect();
            Ok(Done::Renewed(Renewed {
                kept: taken,
                others,
            }))
        }
        Op::Release(stream, session) => {
            let n = client.execute(
                "DELETE FROM publish_leases WHERE stream = $1 AND holder = $2 AND session = $3",
                &[&stream.as_str(), &node, &session_id(*session)],
            )?;
            Ok(Done::Changed(n > 0))
        }
        Op::ReleaseAll => {
            let n = client.execute("DELETE FROM publish_leases WHERE holder = $1", &[&node])?;
            Ok(Done::Changed(n > 0))
        }
        Op::Spend(id, ip, limits) => {
            let counted: i32 = i32::from(limits.max_uses.is_some());
            let ip_text = ip.to_string();
            let granted = client.query_opt(
                SPEND,
                &[
                    &id.0,
                    &counted,
                    &count(limits.bind_ips),
                    &ip_text,
                    &count(limits.max_uses),
                ],
            )?;
            if let Some(row) = granted {
                let uses: i32 = row.get(0);
                return Ok(parse_ips(id.0, row.get(1)).map(|bound_ips| {
                    Done::Spent(Spent::Granted {
                        uses: u32::try_from(uses).unwrap_or(0),
                        bound_ips,
                    })
                }));
            }
            // Refused, or gone: which one, from the row as it is now.
            let now =
                client.query_opt("SELECT uses, bound_ips FROM tokens WHERE id = $1", &[&id.0])?;
            let spent = match now {
                None => Spent::Missing,
                Some(row) => {
                    let uses: i32 = row.get(0);
                    match parse_ips(id.0, row.get(1)) {
                        Ok(ips) => {
                            match limits.spend(u32::try_from(uses).unwrap_or(0), &ips, *ip) {
                                // Spendable now (a use given back by an update in between): the
                                // caller is refused all the same, as exhausted, and may try again.
                                Spent::Granted { .. } => Spent::Exhausted,
                                other => other,
                            }
                        }
                        Err(e) => return Ok(Err(e)),
                    }
                }
            };
            Ok(Done::Spent(spent))
        }
    })
}

/// A session id as the database stores it.
fn session_id(session: u64) -> i64 {
    i64::try_from(session).unwrap_or(i64::MAX)
}

/// Takes or renews `leases` for this node ([`TAKE_LEASES`]); the streams taken.
fn take_leases(
    client: &mut impl ::postgres::GenericClient,
    me: &Me,
    leases: &[HeldLease],
) -> Result<Vec<StreamName>, ::postgres::Error> {
    let streams: Vec<&str> = leases.iter().map(|l| l.stream.as_str()).collect();
    let sessions: Vec<i64> = leases.iter().map(|l| session_id(l.session)).collect();
    let protect: Vec<bool> = leases.iter().map(|l| l.subscribe_requires_auth).collect();
    let rows = client.query(
        TAKE_LEASES,
        &[
            &me.holder,
            &LEASE_TTL.as_secs_f64(),
            &streams,
            &sessions,
            &protect,
            &me.name,
            &me.origin,
        ],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| StreamName::new(r.get::<_, &str>(0)).ok())
        .collect())
}

fn parse_ips(id: i64, texts: Vec<String>) -> Result<Vec<IpAddr>, StoreError> {
    texts
        .iter()
        .map(|t| {
            t.parse().map_err(|_| StoreError::Corrupt {
                id,
                reason: format!("bound address {t:?}"),
            })
        })
        .collect()
}

fn decode_row(row: &Row) -> Result<TokenRecord, StoreError> {
    let id: i64 = row.get(0);
    let kind: String = row.get(1);
    let hash: Vec<u8> = row.get(2);
    let spec: String = row.get(3);
    let added_on: i64 = row.get(4);
    let uses: i32 = row.get(5);
    let bound: Vec<String> = row.get(6);
    let corrupt = |reason: String| StoreError::Corrupt { id, reason };
    let kind = match kind.as_str() {
        "publish" => TokenKind::Publish,
        "subscribe" => TokenKind::Subscribe,
        other => return Err(corrupt(format!("kind {other:?}"))),
    };
    let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt("hash length".into()))?;
    let spec: TokenSpec = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
    Ok(TokenRecord {
        id: TokenId(id),
        kind,
        secret_hash: SecretHash(hash),
        spec,
        added_on,
        uses: u32::try_from(uses).map_err(|_| corrupt(format!("uses {uses}")))?,
        bound_ips: parse_ips(id, bound)?,
    })
}

fn unexpected() -> StoreError {
    StoreError::Closed
}

impl TokenStore for PostgresStore {
    fn load(&self) -> Result<Vec<TokenRecord>, StoreError> {
        match self.run(Op::Load)? {
            Done::Records(records) => Ok(records),
            _ => Err(unexpected()),
        }
    }

    fn fetch(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        match self.run(Op::Fetch(id))? {
            Done::Record(record) => Ok(record.map(|r| *r)),
            _ => Err(unexpected()),
        }
    }

    fn changes(&self) -> Option<mpsc::Receiver<StoreChange>> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn insert(&self, token: NewToken) -> Result<TokenId, StoreError> {
        match self.run(Op::Insert(Box::new(token)))? {
            Done::Id(id) => Ok(id),
            _ => Err(unexpected()),
        }
    }

    fn update(&self, change: &TokenUpdate) -> Result<bool, StoreError> {
        match self.run(Op::Update(Box::new(change.clone())))? {
            Done::Changed(c) => Ok(c),
            _ => Err(unexpected()),
        }
    }

    fn delete(&self, id: TokenId) -> Result<bool, StoreError> {
        match self.run(Op::Delete(id))? {
            Done::Changed(c) => Ok(c),
            _ => Err(unexpected()),
        }
    }

    fn spend(&self, id: TokenId, ip: IpAddr, limits: UseLimits) -> Result<Spent, StoreError> {
        match self.run(Op::Spend(id, ip, limits))? {
            Done::Spent(spent) => Ok(spent),
            _ => Err(unexpected()),
        }
    }

    fn load_revoked_jtis(&self) -> Result<Vec<(String, Option<UnixMillis>)>, StoreError> {
        match self.run(Op::LoadRevoked)? {
            Done::Revoked(revoked) => Ok(revoked),
            _ => Err(unexpected()),
        }
    }

    fn revoke_jti(&self, jti: &str, expires_on: Option<UnixMillis>) -> Result<(), StoreError> {
        match self.run(Op::RevokeJti(jti.to_owned(), expires_on))? {
            Done::Changed(_) => Ok(()),
            _ => Err(unexpected()),
        }
    }

    fn leases(&self) -> Option<Arc<dyn LeaseStore>> {
        Some(Arc::new(PostgresLeases {
            jobs: self.jobs.clone(),
        }))
    }
}

impl LeaseStore for PostgresLeases {
    fn claim(&self, lease: HeldLease) -> Pending<bool> {
        super::pending(&self.jobs, Op::Claim(lease), |done| match done {
            Done::Claimed(taken) => Ok(taken),
            _ => Err(unexpected()),
        })
    }

    fn renew(&self, held: Vec<HeldLease>) -> Pending<Renewed> {
        super::pending(&self.jobs, Op::Renew(held), |done| match done {
            Done::Renewed(renewed) => Ok(renewed),
            _ => Err(unexpected()),
        })
    }

    fn release(&self, stream: &StreamName, session: u64) {
        // Nobody waits for it: a release that fails leaves a lease that expires.
        let _ = super::submit(&self.jobs, Op::Release(stream.clone(), session));
    }

    fn release_all(&self) -> Pending<()> {
        super::pending(&self.jobs, Op::ReleaseAll, |done| match done {
            Done::Changed(_) => Ok(()),
            _ => Err(unexpected()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_read_back_and_a_nodes_own_are_not() {
        assert_eq!(
            heard("a1", "b2 t 42"),
            Some(StoreChange::Token(TokenId(42)))
        );
        assert_eq!(heard("a1", "a1 t 42"), None, "its own");
        assert_eq!(
            heard("a1", "b2 j 1700000000000 id with spaces"),
            Some(StoreChange::Jti(
                "id with spaces".into(),
                Some(1_700_000_000_000)
            ))
        );
        assert_eq!(
            heard("a1", "b2 j - x"),
            Some(StoreChange::Jti("x".into(), None))
        );
        for junk in ["", "b2", "b2 t", "b2 t x", "b2 q 1", "b2 j -"] {
            assert_eq!(heard("a1", junk), None, "{junk:?}");
        }
    }

    #[test]
    fn passwords_never_show_in_messages() {
        assert_eq!(
            redacted("postgres://sg:hunter2@db:5432/streamgate"),
            "postgres://sg:***@db:5432/streamgate"
        );
        assert_eq!(
            redacted("postgres://db/streamgate"),
            "postgres://db/streamgate"
        );
        assert!(!redacted("host=db password=hunter2").contains("hunter2"));
    }
}
