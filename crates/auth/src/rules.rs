//! The rule types a token carries: IP/CIDR blocks, host patterns for origins and referers, and
//! stream-name rules (exact or a whole-name regex).

use std::fmt;
use std::net::IpAddr;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Longest regex source accepted in a stream rule, in bytes.
pub const MAX_REGEX_LEN: usize = 256;
/// Compiled-size bound for a stream-rule regex (the engine is linear-time; this bounds memory).
pub const MAX_REGEX_COMPILED_BYTES: usize = 64 * 1024;
/// Longest host pattern accepted (origin or referer rule), in bytes.
pub const MAX_HOST_PATTERN_LEN: usize = 253;

/// Why a rule could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not an IP address or CIDR block.
    #[error("{0:?} is not an IP address or CIDR block")]
    BadIp(String),
    /// Not a host or `*.host` pattern.
    #[error("{0:?} is not a host name or a '*.example.com' pattern")]
    BadHost(String),
    /// The regex does not compile or is too large.
    #[error("invalid stream regex {0:?}: {1}")]
    BadRegex(String, String),
    /// The stream name rule is empty or malformed.
    #[error("invalid stream name {0:?}")]
    BadStreamName(String),
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) to IPv4 so they meet IPv4 rules.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An IP address or a CIDR block, e.g. `10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRule {
    network: IpAddr,
    prefix: u8,
}

impl IpRule {
    /// Parses an address (a single host) or `address/prefix`. Host bits are cleared.
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let bad = || RuleError::BadIp(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = canonical_ip(addr.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` (canonicalised) lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for IpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.network.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

impl fmt::Debug for IpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpRule({self})")
    }
}

impl TryFrom<String> for IpRule {
    type Error = RuleError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<IpRule> for String {
    fn from(rule: IpRule) -> Self {
        rule.to_string()
    }
}

/// A host rule for origins and referers: `example.com` (that host exactly) or `*.example.com`
/// (any subdomain of example.com, never example.com itself nor `evilexample.com`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern {
    /// Lower-case host, without the `*.` prefix.
    host: String,
    wildcard: bool,
}

impl HostPattern {
    /// Parses `host`, `*.host`, or a URL whose host is taken (`https://example.com:8443/x`).
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let bad = || RuleError::BadHost(text.to_owned());
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.len() > MAX_HOST_PATTERN_LEN {
            return Err(bad());
        }
        let (wildcard, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let host = if wildcard {
            rest.to_ascii_lowercase()
        } else {
            host_of(rest).ok_or_else(bad)?
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let is_ip_literal = host.starts_with('[') && host.ends_with(']');
        if !is_ip_literal && !host.split('.').all(valid_label) {
            return Err(bad());
        }
        if wildcard && is_ip_literal {
            return Err(bad());
        }
        Ok(Self { host, wildcard })
    }

    /// Whether a host (already extracted and lower-cased) matches.
    pub fn matches_host(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes().get(host.len() - self.host.len() - 1) == Some(&b'.')
        } else {
            host == self.host
        }
    }
}

/// The lower-case host of a URL or a bare `host[:port]`, without port, user info or path.
/// Returns `None` for an empty host.
pub fn host_of(value: &str) -> Option<String> {
    let value = value.trim();
    let after_scheme = match value.find("://") {
        Some(i) => value.get(i + 3..)?,
        None => value,
    };
    let authority = after_scheme.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if host_port.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        let end = host_port.find(']')?;
        host_port.get(..=end)?
    } else {
        host_port.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.host)
        } else {
            f.write_str(&self.host)
        }
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostPattern({self})")
    }
}

impl TryFrom<String> for HostPattern {
    type Error = RuleError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HostPattern> for String {
    fn from(p: HostPattern) -> Self {
        p.to_string()
    }
}

/// One entry of a token's `streams`: an exact name or a regex that must match the whole name.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "StreamRuleText", into = "StreamRuleText")]
pub struct StreamRule {
    name: String,
    regex: Option<Regex>,
}

/// The stored and wire form of a [`StreamRule`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreamRuleText {
    /// The stream name, or the regex source when `is_regex`.
    pub stream_name: String,
    /// Whether `stream_name` is a regex.
    #[serde(default)]
    pub is_regex: bool,
}

impl StreamRule {
    /// An exact-name rule.
    pub fn exact(name: &str) -> Result<Self, RuleError> {
        Self::try_from(StreamRuleText {
            stream_name: name.to_owned(),
            is_regex: false,
        })
    }

    /// A regex rule, anchored so that it must match the whole stream name.
    pub fn regex(source: &str) -> Result<Self, RuleError> {
        Self::try_from(StreamRuleText {
            stream_name: source.to_owned(),
            is_regex: true,
        })
    }

    /// Whether the rule admits `stream`.
    pub fn matches(&self, stream: &str) -> bool {
        match &self.regex {
            Some(re) => re.is_match(stream),
            None => self.name == stream,
        }
    }

    /// The name or regex source.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a regex rule.
    pub fn is_regex(&self) -> bool {
        self.regex.is_some()
    }

    /// Whether this is the `"*"` rule that stands for every stream.
    pub fn is_any(&self) -> bool {
        self.regex.is_none() && self.name == "*"
    }
}

impl TryFrom<StreamRuleText> for StreamRule {
    type Error = RuleError;
    fn try_from(t: StreamRuleText) -> Result<Self, Self::Error> {
        if !t.is_regex {
            if t.stream_name != "*" {
                crate::StreamName::new(&t.stream_name)
                    .map_err(|_| RuleError::BadStreamName(t.stream_name.clone()))?;
            }
            return Ok(Self {
                name: t.stream_name,
                regex: None,
            });
        }
        if t.stream_name.is_empty() || t.stream_name.len() > MAX_REGEX_LEN {
            return Err(RuleError::BadRegex(
                t.stream_name,
                format!("must be 1 to {MAX_REGEX_LEN} bytes"),
            ));
        }
        let build = |source: &str| {
            regex::RegexBuilder::new(source)
                .size_limit(MAX_REGEX_COMPILED_BYTES)
                .dfa_size_limit(MAX_REGEX_COMPILED_BYTES)
                .build()
                .map_err(|e| RuleError::BadRegex(t.stream_name.clone(), first_line(&e.to_string())))
        };
        // The source must be a regex by itself: otherwise a group it closes early, such as
        // `x)|(.*`, would reach outside the anchoring group below and match any name.
        build(&t.stream_name)?;
        let regex = build(&format!("^(?:{})$", t.stream_name))?;
        Ok(Self {
            name: t.stream_name,
            regex: Some(regex),
        })
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_owned()
}

impl From<StreamRule> for StreamRuleText {
    fn from(r: StreamRule) -> Self {
        let is_regex = r.is_regex();
        Self {
            stream_name: r.name,
            is_regex,
        }
    }
}

impl fmt::Debug for StreamRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamRule({:?}, regex: {})", self.name, self.is_regex())
    }
}

impl PartialEq for StreamRule {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.is_regex() == other.is_regex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_boundaries() {
        let r = IpRule::parse("10.1.2.0/24").unwrap();
        let cases = [
            ("10.1.2.0", true),
            ("10.1.2.255", true),
            ("10.1.1.255", false),
            ("10.1.3.0", false),
            ("::ffff:10.1.2.9", true),
            ("::ffff:10.1.3.9", false),
            ("2001:db8::1", false),
        ];
        for (addr, want) in cases {
            assert_eq!(r.contains(ip(addr)), want, "{addr}");
        }
        assert!(IpRule::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("203.0.113.9")));
        assert!(!IpRule::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("2001:db8::1")));
        assert!(
            IpRule::parse("10.0.0.7/8")
                .unwrap()
                .contains(ip("10.255.0.1")),
            "host bits cleared"
        );
        let single = IpRule::parse("192.0.2.7").unwrap();
        assert!(single.contains(ip("192.0.2.7")) && !single.contains(ip("192.0.2.8")));
        assert_eq!(single.to_string(), "192.0.2.7");
        assert_eq!(
            IpRule::parse("10.0.0.7/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn ipv6_rules() {
        let r = IpRule::parse("2001:db8:abcd::/48").unwrap();
        assert!(r.contains(ip("2001:db8:abcd:ffff::1")));
        assert!(!r.contains(ip("2001:db8:abce::1")));
        assert!(!r.contains(ip("10.0.0.1")));
        assert!(IpRule::parse("::1").unwrap().contains(ip("::1")));
        assert!(IpRule::parse("::ffff:127.0.0.1")
            .unwrap()
            .contains(ip("127.0.0.1")));
        assert!(IpRule::parse("::/0").unwrap().contains(ip("2001:db8::9")));
    }

    #[test]
    fn bad_ip_rules() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "1.2.3.4/8/8",
        ] {
            assert!(IpRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_patterns() {
        let apex = HostPattern::parse("example.com").unwrap();
        let wild = HostPattern::parse("*.example.com").unwrap();
        let cases = [
            ("example.com", true, false),
            ("www.example.com", false, true),
            ("a.b.example.com", false, true),
            ("evilexample.com", false, false),
            ("example.com.evil.net", false, false),
            ("xexample.com", false, false),
            (".example.com", false, false),
        ];
        for (host, apex_want, wild_want) in cases {
            assert_eq!(apex.matches_host(host), apex_want, "apex {host}");
            assert_eq!(wild.matches_host(host), wild_want, "wild {host}");
        }
        assert_eq!(
            HostPattern::parse("https://App.Example.com:8443/x")
                .unwrap()
                .to_string(),
            "app.example.com"
        );
        for bad in [
            "",
            "*.",
            "*",
            "exa mple.com",
            "**.example.com",
            "*.*.example.com",
            "http://",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_extraction() {
        let cases = [
            ("https://www.example.com", Some("www.example.com")),
            (
                "https://www.Example.com:8443/page?q=1",
                Some("www.example.com"),
            ),
            ("http://user:pw@example.com/", Some("example.com")),
            ("example.com:80", Some("example.com")),
            ("http://[::1]:8080/", Some("[::1]")),
            ("null", Some("null")),
            ("", None),
            ("https://", None),
        ];
        for (input, want) in cases {
            assert_eq!(host_of(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn stream_rules_anchor_regexes() {
        let r = StreamRule::regex("live/cam[0-9]+").unwrap();
        assert!(r.matches("live/cam12"));
        assert!(!r.matches("live/cam12x"));
        assert!(!r.matches("xlive/cam1"));
        let alt = StreamRule::regex("a|b").unwrap();
        assert!(
            alt.matches("a") && alt.matches("b") && !alt.matches("ab"),
            "alternation stays anchored"
        );
        let exact = StreamRule::exact("live/cam1").unwrap();
        assert!(exact.matches("live/cam1") && !exact.matches("live/cam10"));
        assert!(StreamRule::exact("*").unwrap().is_any());
        assert!(!StreamRule::regex(".*").unwrap().is_any());
    }

    #[test]
    fn a_regex_cannot_close_its_anchoring_group() {
        for escape in ["x)|(.*", "x)|(?:.*", "a)|.*|(b", ")(", "x\\"] {
            assert!(
                StreamRule::regex(escape).is_err(),
                "{escape:?} is not a regex by itself"
            );
        }
        // Groups and flags of their own stay inside the anchoring.
        let grouped = StreamRule::regex("(live|test)/(?i:cam)[0-9]+").unwrap();
        assert!(grouped.matches("test/CAM7"));
        assert!(!grouped.matches("other/live/cam1"));
        assert!(!grouped.matches("live/cam1/x"));
    }

    #[test]
    fn bad_stream_rules() {
        assert!(StreamRule::regex("(unclosed").is_err());
        assert!(StreamRule::regex("").is_err());
        assert!(StreamRule::regex(&"a".repeat(MAX_REGEX_LEN + 1)).is_err());
        assert!(
            StreamRule::regex("(a{1000}){1000}").is_err(),
            "compiled size is bounded"
        );
        assert!(StreamRule::exact("live/cam 1").is_err());
        assert!(StreamRule::exact("").is_err());
    }
}
