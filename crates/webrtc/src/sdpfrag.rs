//! Trickle ICE and ICE restarts over HTTP (WHIP, WHEP; RFC 9725 section 4.3, RFC 8840): the
//! `application/trickle-ice-sdpfrag` bodies a client `PATCH`es, and the fragment the server
//! answers a restart with. Sans IO, on SDP text; every line a client sends is bounded.

/// Longest `ice-ufrag` or `ice-pwd` taken (RFC 8839 allows 256 characters).
const MAX_CREDENTIAL_LEN: usize = 256;
/// Longest `candidate:` line taken.
const MAX_CANDIDATE_LEN: usize = 1024;

/// What a client's fragment carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragment {
    /// The client's ICE credentials, when it sent them (every WHIP client does).
    pub ufrag: Option<String>,
    /// The client's ICE password.
    pub pwd: Option<String>,
    /// Candidates (`candidate:` lines without `a=`), each with the `mid` of its section.
    pub candidates: Vec<(String, Option<String>)>,
}

/// Why a fragment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// A line is longer than it may be, or a credential has characters ICE does not allow.
    #[error("malformed SDP fragment: {0}")]
    Malformed(&'static str),
    /// More candidates than a session takes.
    #[error("too many ICE candidates")]
    TooManyCandidates,
}

/// Parses a client's fragment, taking at most `max_candidates` candidates.
pub fn parse(body: &str, max_candidates: usize) -> Result<Fragment, FragmentError> {
    let mut fragment = Fragment::default();
    let mut mid: Option<String> = None;
    for line in body.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            mid = None;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            if m.len() > MAX_CREDENTIAL_LEN {
                return Err(FragmentError::Malformed("mid too long"));
            }
            mid = Some(m.to_owned());
        } else if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            fragment.ufrag = Some(credential(u)?);
        } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
            fragment.pwd = Some(credential(p)?);
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            if c.len() > MAX_CANDIDATE_LEN {
                return Err(FragmentError::Malformed("candidate too long"));
            }
            if fragment.candidates.len() >= max_candidates {
                return Err(FragmentError::TooManyCandidates);
            }
            fragment
                .candidates
                .push((format!("candidate:{c}"), mid.clone()));
        }
    }
    Ok(fragment)
}

/// An `ice-char` string (RFC 8839: letters, digits, `+` and `/`) of bounded length.
fn credential(text: &str) -> Result<String, FragmentError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_CREDENTIAL_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(FragmentError::Malformed("ICE credential"))
    }
}

/// The ICE credentials a description uses (its first `ice-ufrag` and `ice-pwd`).
pub fn credentials(sdp: &str) -> Option<(String, String)> {
    let find = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix))
            .map(str::to_owned)
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// The client's offer with new ICE credentials (in every media section) and these candidates
/// in place of its old ones: what the server applies to restart ICE.
pub fn with_credentials(offer: &str, ufrag: &str, pwd: &str, candidates: &[String]) -> String {
    let crlf = offer.contains("\r\n");
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(offer.len() + candidates.len() * 100);
    let mut placed = false;
    for line in offer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        let line = if line.starts_with("a=ice-ufrag:") {
            format!("a=ice-ufrag:{ufrag}")
        } else if line.starts_with("a=ice-pwd:") {
            format!("a=ice-pwd:{pwd}")
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push_str(eol);
        // The candidates go after the first credentials (BUNDLE: one transport for all).
        if !placed && line.starts_with("a=ice-pwd:") {
            placed = true;
            for c in candidates {
                out.push_str("a=");
                out.push_str(c);
                out.push_str(eol);
            }
        }
    }
    out
}

/// The fragment answering a restart: the server's new credentials and its candidates, from
/// its new local description.
pub fn answer(local: &str) -> Option<String> {
    let (ufrag, pwd) = credentials(local)?;
    let mut out = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let mut in_first_section = false;
    for line in local.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            if in_first_section {
                // BUNDLE: the first section's candidates serve every section.
                break;
            }
            in_first_section = true;
            out.push_str(line);
            out.push_str("\r\n");
        } else if in_first_section && (line.starts_with("a=mid:") || rtp_candidate(line)) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    Some(out)
}

/// Whether `line` is a candidate of the RTP component (1): with `rtcp-mux`, which WebRTC
/// requires, the RTCP component's duplicates add nothing.
fn rtp_candidate(line: &str) -> bool {
    line.strip_prefix("a=candidate:")
        .is_some_and(|c| c.split(' ').nth(1) == Some("1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What whip-whep's client (and RFC 9725's example) sends for trickle.
    const TRICKLE: &str = "a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
        a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn a_trickle_fragment_gives_its_credentials_and_candidates() {
        let f = parse(TRICKLE, 32).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("bP+XJMM09aR8AiX1jdukzR6Y"));
        assert_eq!(f.candidates.len(), 2);
        assert!(f.candidates[0].0.starts_with("candidate:1387637174 1 udp"));
        assert_eq!(f.candidates[1].1.as_deref(), Some("0"));
        assert_eq!(
            parse(TRICKLE, 1).unwrap_err(),
            FragmentError::TooManyCandidates
        );
        assert_eq!(parse("", 32).unwrap(), Fragment::default());
    }

    #[test]
    fn hostile_fragments_are_refused() {
        let long = format!("a=candidate:{}\r\n", "1".repeat(2000));
        assert!(matches!(parse(&long, 32), Err(FragmentError::Malformed(_))));
        for bad in [
            "a=ice-ufrag:\r\n",
            "a=ice-ufrag:a b\r\n",
            "a=ice-pwd:x\"y\r\n",
        ] {
            assert!(
                matches!(parse(bad, 32), Err(FragmentError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mid = format!("a=mid:{}\r\n", "m".repeat(300));
        assert!(matches!(parse(&mid, 32), Err(FragmentError::Malformed(_))));
    }

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpassword1\r\n\
        a=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpassword1\r\n\
        a=end-of-candidates\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn a_restart_rewrites_the_offer_and_answers_with_a_fragment() {
        let candidates = vec!["candidate:9 1 udp 9 198.51.100.9 6000 typ host".to_owned()];
        let offer = with_credentials(OFFER, "new2", "newpassword22", &candidates);
        assert_eq!(
            credentials(&offer),
            Some(("new2".to_owned(), "newpassword22".to_owned()))
        );
        assert!(!offer.contains("old1") && !offer.contains("192.0.2.1"));
        assert_eq!(offer.matches("a=candidate:9 ").count(), 1, "{offer}");
        assert!(!offer.contains("end-of-candidates"));
        assert!(offer.contains("a=rtpmap:96 H264/90000\r\n"));

        let local = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=ice-ufrag:srv\r\na=ice-pwd:serverpassword\r\na=candidate:7 1 udp 7 127.0.0.1 7000 typ host\r\n\
            a=candidate:7 2 udp 7 127.0.0.1 7000 typ host\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=candidate:8 1 udp 8 127.0.0.1 7000 typ host\r\n";
        let frag = answer(local).unwrap();
        assert!(frag.starts_with("a=ice-ufrag:srv\r\na=ice-pwd:serverpassword\r\n"));
        assert!(frag.contains("m=audio") && frag.contains("a=mid:0"));
        assert!(frag.contains("a=candidate:7 1 ") && !frag.contains("a=candidate:8 "));
        assert!(!frag.contains("a=candidate:7 2 "), "RTP component only");
        assert!(answer("v=0\r\n").is_none());
    }
}
