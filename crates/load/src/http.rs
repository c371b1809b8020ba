//! Minting tokens through the REST API (plain HTTP, one request per connection).

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Creates a token of `kind` (`publish` or `subscribe`) for `stream` and returns its secret.
pub async fn mint(api: &str, secret: &str, kind: &str, stream: &str) -> Result<String, String> {
    let host = api.trim_start_matches("http://").trim_end_matches('/');
    if api.starts_with("https://") {
        return Err("only http:// API URLs are supported; pass ready-made tokens instead".into());
    }
    let body = serde_json::json!({
        "label": format!("load test {kind}"),
        "streams": [{"streamName": stream, "isRegex": false}],
        "expires": 86_400,
    })
    .to_string();
    let request = format!(
        "POST /api/{kind}_token HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(host)
        .await
        .map_err(|e| format!("cannot reach the API at {host}: {e}"))?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed API answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "minting a {kind} token failed: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    // axum answers with a fixed length here; a chunked body would start with its size line.
    let json_start = body.find('{').ok_or("no JSON in the API answer")?;
    let v: serde_json::Value = serde_json::from_str(
        body.get(json_start..)
            .unwrap_or_default()
            .trim_end_matches(|c: char| c != '}'),
    )
    .map_err(|e| format!("API answer is not JSON: {e}"))?;
    v.pointer("/data/token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "no token in the API answer".into())
}
