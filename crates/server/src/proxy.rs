//! The client address behind trusted proxies: `[http] trusted_proxies`. Only a request that
//! comes from one of them has its `Forwarded` (RFC 7239) or `X-Forwarded-For` header read;
//! from any other address those headers are ignored, so that a client cannot choose the
//! address its token's rules see.
//!
//! The chain is read from the right (the hop nearest the server): trusted proxies are passed
//! over and the first address that is not one is the client. A hop that cannot be read (an
//! obfuscated or `unknown` node) stops the walk, and the request is taken as coming from the
//! proxy that sent it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use streamgate_auth::rules::IpRule;

/// Most hops read from a forwarding header.
const MAX_HOPS: usize = 32;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    rules: Vec<IpRule>,
}

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR blocks; empty for none.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            rules.push(
                IpRule::parse(item)
                    .map_err(|_| format!("{item:?} is not an address or CIDR block"))?,
            );
        }
        Ok(Self { rules })
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.rules.iter().any(|r| r.contains(ip))
    }

    /// The address of the client of a request that `peer` sent with `headers`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = match forwarded(headers) {
            Some(hops) => hops,
            None => match x_forwarded_for(headers) {
                Some(hops) => hops,
                None => return peer,
            },
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(addr) = hop else {
                return client;
            };
            client = *addr;
            if !self.trusts(addr.ip()) {
                break;
            }
        }
        client
    }
}

/// The `for=` addresses of every `Forwarded` header, in order (`None` for a hop that is not
/// an address).
fn forwarded(headers: &HeaderMap) -> Option<Vec<Option<SocketAddr>>> {
    let mut hops = Vec::new();
    for value in headers.get_all("forwarded") {
        let text = value.to_str().ok()?;
        for element in text.split(',') {
            let for_value = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"'))
            });
            if let Some(v) = for_value {
                hops.push(node(v));
            }
            if hops.len() >= MAX_HOPS {
                return Some(hops);
            }
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// The addresses of every `X-Forwarded-For` header, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<SocketAddr>>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().ok()?;
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            hops.push(node(item));
            if hops.len() >= MAX_HOPS {
                return Some(hops);
            }
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// A node as forwarding headers write it: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`; `None` for `unknown`, obfuscated names and anything else.
fn node(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(addr: SocketAddr) -> String {
        addr.ip().to_string()
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(ip(proxies.client(proxy, &xff)), "203.0.113.7");
        assert_eq!(
            proxies.client(stranger, &xff),
            stranger,
            "ignored from others"
        );
        assert_eq!(proxies.client(proxy, &HeaderMap::new()), proxy, "no header");
        assert_eq!(
            TrustedProxies::default().client(proxy, &xff),
            proxy,
            "none trusted"
        );
    }

    #[test]
    fn the_chain_is_read_from_the_nearest_hop() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        // A client that writes its own header gets it appended to, not believed.
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 10.9.9.9")]);
        assert_eq!(ip(proxies.client(proxy, &spoofed)), "203.0.113.7");
        let two_headers = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.8"),
        ]);
        assert_eq!(ip(proxies.client(proxy, &two_headers)), "203.0.113.8");
        let rfc = headers(&[(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=10.1.2.3",
        )]);
        let client = proxies.client(proxy, &rfc);
        assert_eq!(client.to_string(), "[2001:db8:cafe::17]:4711");
        // Forwarded wins over X-Forwarded-For when both come.
        let both = headers(&[
            ("forwarded", "for=203.0.113.9"),
            ("x-forwarded-for", "203.0.113.10"),
        ]);
        assert_eq!(ip(proxies.client(proxy, &both)), "203.0.113.9");
        // An unreadable hop stops the walk at the proxy that sent it.
        let hidden = headers(&[("forwarded", "for=_hidden, for=unknown")]);
        assert_eq!(proxies.client(proxy, &hidden), proxy);
        // Every hop trusted: the farthest one.
        let internal = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(ip(proxies.client(proxy, &internal)), "10.0.0.5");
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example").is_err());
        let long = std::iter::repeat_n("10.0.0.1", 100)
            .collect::<Vec<_>>()
            .join(", ");
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(&long).unwrap());
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert_eq!(ip(proxies.client(proxy, &h)), "10.0.0.1", "bounded walk");
    }
}
