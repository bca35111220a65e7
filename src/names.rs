//! Kubernetes name rules (RFC 1123). Names that arrive in a request or a setting are checked
//! with these before they become part of an API path or a tool's argv.

/// A DNS subdomain: most object names (Secrets, Applications); at most 253 characters.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

/// A DNS label of at most `max` characters: namespaces (63), helm release names (53).
pub(crate) fn is_dns_label(s: &str, max: usize) -> bool {
    s.len() <= max && !s.contains('.') && is_dns_subdomain(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1123_names() {
        for good in ["a", "web-1", "a.b-c", &"x".repeat(253)] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in [
            "",
            "Web",
            "-a",
            "a-",
            ".a",
            "a.",
            "a_b",
            "a/b",
            &"x".repeat(254),
        ] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        assert!(is_dns_label("argocd", 63));
        assert!(!is_dns_label("a.b", 63));
        assert!(!is_dns_label(&"x".repeat(54), 53));
    }
}
