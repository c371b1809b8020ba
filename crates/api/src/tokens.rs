//! `/api/publish_token` and `/api/subscribe_token`: create, get, list, update, delete, in
//! Millicast's shape.

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use streamgate_auth::rules::{HostPattern, IpRule, StreamRule, StreamRuleText};
use streamgate_auth::{
    ListQuery, Secret, SortBy, SpecError, SrtPassphrase, TokenId, TokenKind, TokenRecord,
    TokenSpec, MAX_ITEMS_ON_PAGE,
};

use crate::body::json_body;
use crate::envelope::success;
use crate::{iso8601, ApiError, ApiState};

/// List page size when `itemsOnPage` is not given.
pub const DEFAULT_ITEMS_ON_PAGE: usize = 25;

pub fn routes() -> Router<ApiState> {
    let mut router = Router::new();
    for (path, kind) in [
        ("publish_token", TokenKind::Publish),
        ("subscribe_token", TokenKind::Subscribe),
    ] {
        router = router
            .route(
                &format!("/{path}"),
                axum::routing::post(move |s: State<ApiState>, h: HeaderMap, b: Body| {
                    create(kind, s, h, b)
                }),
            )
            .route(
                &format!("/{path}/list"),
                get(
                    move |s: State<ApiState>, q: Result<Query<HashMap<String, String>>, _>| {
                        list(kind, s, q)
                    },
                ),
            )
            .route(
                &format!("/{path}/{{id}}"),
                get(move |s: State<ApiState>, id: Path<String>| read(kind, s, id))
                    .put(
                        move |s: State<ApiState>, id: Path<String>, h: HeaderMap, b: Body| {
                            update(kind, s, id, h, b)
                        },
                    )
                    .delete(move |s: State<ApiState>, id: Path<String>| remove(kind, s, id)),
            );
    }
    // Millicast's v2 update routes.
    for (path, kind) in [
        ("publish_token", TokenKind::Publish),
        ("subscribe_token", TokenKind::Subscribe),
    ] {
        router = router.route(
            &format!("/v2/{path}/{{id}}"),
            axum::routing::put(
                move |s: State<ApiState>, id: Path<String>, h: HeaderMap, b: Body| {
                    update(kind, s, id, h, b)
                },
            ),
        );
    }
    router
}

/// `streams` as clients send it: a list of rules, or `"*"` / null for every stream.
#[derive(Debug, Default)]
struct Streams(Vec<StreamRule>);

impl<'de> Deserialize<'de> for Streams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Streams;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of {streamName, isRegex} or \"*\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Streams, E> {
                if v == "*" {
                    Ok(Streams(Vec::new()))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Streams, E> {
                Ok(Streams(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Streams, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element::<StreamRule>()? {
                    rules.push(rule);
                }
                if rules.is_empty() {
                    // An empty list reads as "no stream" to some and "every stream" to others:
                    // neither is taken.
                    return Err(de::Error::custom(
                        "must not be empty: give \"*\" (or leave streams out) for every stream",
                    ));
                }
                Ok(Streams(rules))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    label: String,
    #[serde(default)]
    streams: Option<Streams>,
    expires: Option<u64>,
    allowed_origins: Option<Vec<HostPattern>>,
    allowed_ip_addresses: Option<Vec<IpRule>>,
    bind_ips_on_usage: Option<u32>,
    subscribe_requires_auth: Option<bool>,
    max_uses: Option<u32>,
    tag: Option<String>,
    allowed_referers: Option<Vec<HostPattern>>,
    allowed_user_agents: Option<Vec<String>>,
    is_active: Option<bool>,
    srt_passphrase: Option<String>,
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateBody {
    label: Option<String>,
    streams: Option<Streams>,
    #[serde(default, deserialize_with = "nullable")]
    expires: Option<Option<u64>>,
    allowed_origins: Option<Vec<HostPattern>>,
    allowed_ip_addresses: Option<Vec<IpRule>>,
    #[serde(default, deserialize_with = "nullable")]
    bind_ips_on_usage: Option<Option<u32>>,
    subscribe_requires_auth: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    max_uses: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    tag: Option<Option<String>>,
    allowed_referers: Option<Vec<HostPattern>>,
    allowed_user_agents: Option<Vec<String>>,
    is_active: Option<bool>,
    update_allowed_origins: Option<Vec<HostPattern>>,
    update_allowed_ip_addresses: Option<Vec<IpRule>>,
    #[serde(default, deserialize_with = "nullable")]
    update_bind_ips_on_usage: Option<Option<u32>>,
    add_token_streams: Option<Vec<StreamRule>>,
    remove_token_streams: Option<Vec<RemoveStream>>,
    #[serde(default)]
    refresh_token: bool,
    #[serde(default, deserialize_with = "nullable")]
    srt_passphrase: Option<Option<String>>,
}

/// One entry of `removeTokenStreams`: a stream name or regex source as a string (Millicast's
/// shape: every rule with that text goes), or a `{streamName, isRegex}` object (that rule).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RemoveStream {
    Text(String),
    Rule(StreamRuleText),
}

impl RemoveStream {
    fn removes(&self, rule: &StreamRule) -> bool {
        match self {
            Self::Text(t) => t == rule.name(),
            Self::Rule(r) => r.stream_name == rule.name() && r.is_regex == rule.is_regex(),
        }
    }
}

/// A token as the API shows it; `token` only right after creation or rotation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenOut {
    id: i64,
    label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    added_on: String,
    expires_on: Option<String>,
    is_active: bool,
    streams: Vec<StreamRuleText>,
    allowed_origins: Vec<String>,
    allowed_ip_addresses: Vec<String>,
    bind_ips_on_usage: Option<u32>,
    bound_ip_addresses: Vec<String>,
    max_uses: Option<u32>,
    uses: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe_requires_auth: Option<bool>,
    tag: Option<String>,
    allowed_referers: Vec<String>,
    allowed_user_agents: Vec<String>,
    /// Shown only when it was just set; afterwards only `hasSrtPassphrase`.
    #[serde(skip_serializing_if = "Option::is_none")]
    srt_passphrase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_srt_passphrase: Option<bool>,
}

/// Shows a token; `secret` and the SRT passphrase only when `reveal` (creation, rotation, or the
/// update that set them).
fn show(r: TokenRecord, secret: Option<Secret>) -> TokenOut {
    show_with(r, secret, false)
}

fn show_with(r: TokenRecord, secret: Option<Secret>, reveal_passphrase: bool) -> TokenOut {
    let s = r.spec;
    let streams = if s.streams.is_empty() {
        vec![StreamRuleText {
            stream_name: "*".into(),
            is_regex: false,
        }]
    } else {
        s.streams.into_iter().map(StreamRuleText::from).collect()
    };
    TokenOut {
        id: r.id.0,
        label: s.label,
        token: secret.map(|s| s.expose().to_owned()),
        added_on: iso8601(r.added_on),
        expires_on: s.expires_on.map(iso8601),
        is_active: s.is_active,
        streams,
        allowed_origins: s.allowed_origins.iter().map(ToString::to_string).collect(),
        allowed_ip_addresses: s
            .allowed_ip_addresses
            .iter()
            .map(ToString::to_string)
            .collect(),
        bind_ips_on_usage: s.bind_ips_on_usage,
        bound_ip_addresses: r.bound_ips.iter().map(ToString::to_string).collect(),
        max_uses: s.max_uses,
        uses: r.uses,
        subscribe_requires_auth: (r.kind == TokenKind::Publish)
            .then_some(s.subscribe_requires_auth),
        tag: s.tag,
        allowed_referers: s.allowed_referers.iter().map(ToString::to_string).collect(),
        allowed_user_agents: s.allowed_user_agents,
        has_srt_passphrase: (r.kind == TokenKind::Publish).then_some(s.srt_passphrase.is_some()),
        srt_passphrase: s.srt_passphrase.filter(|_| reveal_passphrase).map(|p| p.0),
    }
}

fn parse_id(id: &str) -> Result<TokenId, ApiError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(TokenId)
        .ok_or_else(|| ApiError::not_found("token not found"))
}

/// Runs blocking auth work (it may wait for the store's disk flush) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&e))?
}

async fn create(
    kind: TokenKind,
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let b: CreateBody = json_body(&headers, body).await?;
    let now = SystemTime::now();
    let spec = TokenSpec {
        label: b.label,
        tag: b.tag,
        streams: b.streams.unwrap_or_default().0,
        expires_on: state.auth.expiry(now, b.expires, "expires")?,
        allowed_ip_addresses: b.allowed_ip_addresses.unwrap_or_default(),
        allowed_origins: b.allowed_origins.unwrap_or_default(),
        allowed_referers: b.allowed_referers.unwrap_or_default(),
        allowed_user_agents: b.allowed_user_agents.unwrap_or_default(),
        bind_ips_on_usage: b.bind_ips_on_usage,
        max_uses: b.max_uses,
        subscribe_requires_auth: b.subscribe_requires_auth.unwrap_or(false),
        is_active: b.is_active.unwrap_or(true),
        srt_passphrase: b.srt_passphrase.map(SrtPassphrase),
    };
    let auth = state.auth.clone();
    let (record, secret) = blocking(move || Ok(auth.create(kind, spec, now)?)).await?;
    tracing::info!(kind = kind.as_str(), id = %record.id, "token created");
    Ok(success(show_with(record, Some(secret), true)))
}

async fn read(
    kind: TokenKind,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    Ok(success(show(state.auth.get(kind, id)?, None)))
}

async fn list(
    kind: TokenKind,
    State(state): State<ApiState>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        params.get(name).map_or(Ok(default), |v| {
            v.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("{name}: must be a positive integer")))
        })
    };
    let items_on_page = number("itemsOnPage", DEFAULT_ITEMS_ON_PAGE)?;
    if !(1..=MAX_ITEMS_ON_PAGE).contains(&items_on_page) {
        return Err(ApiError::bad_request(format!(
            "itemsOnPage: must be 1 to {MAX_ITEMS_ON_PAGE}"
        )));
    }
    let page = number("page", 1)?;
    if page == 0 {
        return Err(ApiError::bad_request("page: pages start at 1"));
    }
    let sort_by = match params
        .get("sortBy")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("addedon") => SortBy::AddedOn,
        Some("label") => SortBy::Label,
        Some("id") => SortBy::Id,
        Some(_) => {
            return Err(ApiError::bad_request(
                "sortBy: must be AddedOn, Label or Id",
            ))
        }
    };
    let descending = match params.get("isDescending").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("isDescending: must be true or false")),
    };
    let q = ListQuery {
        page,
        items_on_page,
        sort_by,
        descending,
        tag: params.get("tag").cloned(),
    };
    let items: Vec<TokenOut> = state
        .auth
        .list(kind, &q)
        .into_iter()
        .map(|r| show(r, None))
        .collect();
    Ok(success(items))
}

async fn update(
    kind: TokenKind,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let b: UpdateBody = json_body(&headers, body).await?;
    for (both, field) in [
        (
            b.allowed_origins.is_some() && b.update_allowed_origins.is_some(),
            "updateAllowedOrigins",
        ),
        (
            b.allowed_ip_addresses.is_some() && b.update_allowed_ip_addresses.is_some(),
            "updateAllowedIpAddresses",
        ),
        (
            b.bind_ips_on_usage.is_some() && b.update_bind_ips_on_usage.is_some(),
            "updateBindIpsOnUsage",
        ),
        (
            b.streams.is_some()
                && (b.add_token_streams.is_some() || b.remove_token_streams.is_some()),
            "addTokenStreams",
        ),
    ] {
        if both {
            return Err(ApiError::bad_request(format!(
                "{field}: give either the update field or the replacing one, not both"
            )));
        }
    }
    let now = SystemTime::now();
    let passphrase_set = matches!(b.srt_passphrase, Some(Some(_)));
    let policy = state.auth.clone();
    let change = move |s: &mut TokenSpec| -> Result<(), SpecError> {
        if let Some(label) = b.label {
            s.label = label;
        }
        if let Some(streams) = b.streams {
            s.streams = streams.0;
        }
        if let Some(remove) = b.remove_token_streams {
            let was_scoped = !s.streams.is_empty();
            s.streams.retain(|r| !remove.iter().any(|t| t.removes(r)));
            if was_scoped
                && s.streams.is_empty()
                && b.add_token_streams.as_ref().is_none_or(Vec::is_empty)
            {
                return Err(SpecError::new(
                    "removeTokenStreams",
                    "would remove every stream, which makes the token server-wide; set streams to \"*\" for that",
                ));
            }
        }
        if let Some(add) = b.add_token_streams {
            for rule in add {
                if !s.streams.contains(&rule) {
                    s.streams.push(rule);
                }
            }
        }
        if let Some(expires) = b.expires {
            s.expires_on = policy.expiry(now, expires, "expires")?;
        }
        if let Some(v) = b.allowed_origins.or(b.update_allowed_origins) {
            s.allowed_origins = v;
        }
        if let Some(v) = b.allowed_ip_addresses.or(b.update_allowed_ip_addresses) {
            s.allowed_ip_addresses = v;
        }
        if let Some(v) = b.bind_ips_on_usage.or(b.update_bind_ips_on_usage) {
            s.bind_ips_on_usage = v;
        }
        if let Some(v) = b.subscribe_requires_auth {
            s.subscribe_requires_auth = v;
        }
        if let Some(v) = b.max_uses {
            s.max_uses = v;
        }
        if let Some(v) = b.tag {
            s.tag = v;
        }
        if let Some(v) = b.allowed_referers {
            s.allowed_referers = v;
        }
        if let Some(v) = b.allowed_user_agents {
            s.allowed_user_agents = v;
        }
        if let Some(v) = b.is_active {
            s.is_active = v;
        }
        if let Some(v) = b.srt_passphrase {
            s.srt_passphrase = v.map(SrtPassphrase);
        }
        Ok(())
    };

    let refresh = b.refresh_token;
    let auth = state.auth.clone();
    let (record, secret) =
        blocking(move || Ok(auth.update(kind, id, Box::new(change), refresh)?)).await?;
    tracing::info!(kind = kind.as_str(), id = %id, rotated = refresh, "token updated");
    Ok(success(show_with(record, secret, passphrase_set)))
}

async fn remove(
    kind: TokenKind,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let auth = state.auth.clone();
    blocking(move || Ok(auth.delete(kind, id)?)).await?;
    tracing::info!(kind = kind.as_str(), id = %id, "token deleted");
    Ok(success(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(json: &str) -> Result<Vec<StreamRule>, String> {
        serde_json::from_str::<Streams>(json)
            .map(|s| s.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_stream_list_is_refused_and_every_stream_is_said_plainly() {
        let err = streams("[]").unwrap_err();
        assert!(err.contains("must not be empty"), "{err}");
        // Every stream: "*" or null (an omitted field is the default, also empty).
        assert_eq!(streams("\"*\"").unwrap().len(), 0);
        assert_eq!(streams("null").unwrap().len(), 0);
        assert!(streams("\"cam1\"").is_err(), "a bare name is not \"*\"");
        let one = streams(r#"[{"streamName": "live/cam1"}]"#).unwrap();
        assert_eq!(one.len(), 1);
    }
}
