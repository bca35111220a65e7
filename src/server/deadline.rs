//! The request deadline. Argo's repo-server passes its own context deadline as `grpc-timeout`.
//! Like Argo's sidecar we stop early so our error reaches the client before its deadline (and
//! before tonic's own timeout layer drops the handler and answers a bare CANCELLED). Argo keeps
//! 100 ms; on a busy node that is too little, so we keep 5% of the timeout, between 100 ms and
//! 1 s (3 s of 60 s would be wasteful, 100 ms of 60 s is fragile).

use std::time::Duration;

use tokio::time::Instant;

/// Headroom kept between our deadline and the client's.
pub(crate) fn buffer(timeout: Duration) -> Duration {
    (timeout / 20).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Parses a `grpc-timeout` value: 1–8 digits and a unit (H, M, S, m, u, n). Anything else,
/// including non-ASCII text, is `None`.
pub(crate) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    // Work on bytes: the unit is one ASCII byte, and slicing the text before a multi-byte last
    // character would not be on a char boundary.
    let (&unit, digits) = v.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0_u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline for a request received now: client's timeout minus the buffer, else the
/// operator's default, else none.
pub(crate) fn from_metadata(
    md: &tonic::metadata::MetadataMap,
    default: Option<Duration>,
) -> Option<Instant> {
    let now = Instant::now();
    match md
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(t) => Some(now + t.saturating_sub(buffer(t))),
        None => default.map(|d| now + d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let check =
            |v: &str, want: Option<Duration>| assert_eq!(parse_grpc_timeout(v), want, "{v}");
        check("60S", Some(Duration::from_secs(60)));
        check("59999m", Some(Duration::from_millis(59999)));
        check("1H", Some(Duration::from_secs(3600)));
        check("2M", Some(Duration::from_secs(120)));
        check("100u", Some(Duration::from_micros(100)));
        check("7n", Some(Duration::from_nanos(7)));
        check("99999999S", Some(Duration::from_secs(99_999_999)));
        check("123456789S", None);
        check("S", None);
        check("10", None);
        check("-1S", None);
        check("1x", None);
        check("", None);
        check("00000001S", Some(Duration::from_secs(1)));
        check("000000001S", None);
        // Found by the property tests: a multi-byte last character used to panic.
        check("0\u{a1}", None);
        check("1\u{e9}", None);
    }

    #[test]
    fn buffer_scales_with_timeout() {
        assert_eq!(buffer(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(buffer(Duration::from_secs(6)), Duration::from_millis(300));
        assert_eq!(buffer(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(buffer(Duration::from_secs(3600)), Duration::from_secs(1));
    }
}

#[cfg(test)]
mod props;
